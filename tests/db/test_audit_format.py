"""Export formats (pure): JSON Lines and CSV lines that parse back to the same record."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from bot.db.audit_format import CSV_COLUMNS, csv_header, to_csv_row, to_jsonl
from bot.policy.audit_chain import GENESIS_HASH, AuditRecord, build_record, first_broken

TS = datetime(2024, 11, 3, 1, 30, 0, 5, tzinfo=UTC)


def sample(seq: int = 1, prev: str = GENESIS_HASH) -> AuditRecord:
    return build_record(
        seq,
        TS,
        "@therapist:clinic.example",
        "command.executed",
        "!r:clinic.example",
        None,
        None,
        {"command": "retention", "args": ["7d", 'say "hi", then\nleave'], "ok": True},
        prev,
    )


def from_jsonl(line: str) -> AuditRecord:
    d = json.loads(line)
    d["ts"] = datetime.fromisoformat(d["ts"])
    return AuditRecord(**d)


def test_jsonl_is_one_line_that_reverifies() -> None:
    first = sample()
    second = sample(2, first.hash)
    lines = [to_jsonl(first), to_jsonl(second)]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    parsed = [from_jsonl(line) for line in lines]
    assert parsed == [first, second]
    assert first_broken(parsed) is None  # an export can be checked offline
    assert json.loads(lines[0])["ts"] == "2024-11-03T01:30:00.000005Z"


def test_csv_header_and_row_parse_back() -> None:
    record = sample()
    text = csv_header() + to_csv_row(record)
    header, row = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(header) == CSV_COLUMNS
    values = dict(zip(header, row, strict=True))
    assert values["seq"] == "1"
    assert values["ts"] == "2024-11-03T01:30:00.000005Z"
    assert values["event_id"] == ""  # null
    assert values["subject"] == ""
    assert json.loads(values["details"]) == record.details
    assert values["hash"] == record.hash
    assert to_csv_row(record).endswith("\r\n")
