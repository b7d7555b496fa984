"""Audit export formats: JSON Lines and CSV. Pure; each function returns one complete line."""

from __future__ import annotations

import csv
import io
from typing import Any

from bot.policy.audit_chain import RECORD_FIELDS, AuditRecord, canonical_json, format_ts

CSV_COLUMNS = RECORD_FIELDS


def to_dict(record: AuditRecord) -> dict[str, Any]:
    """The record as plain JSON-ready values (ts in the chain's canonical form)."""
    return {
        "seq": record.seq,
        "ts": format_ts(record.ts),
        "actor": record.actor,
        "action": record.action,
        "room_id": record.room_id,
        "event_id": record.event_id,
        "subject": record.subject,
        "details": record.details,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def to_jsonl(record: AuditRecord) -> str:
    """One JSON Lines line, newline included."""
    return canonical_json(to_dict(record)) + "\n"


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)  # RFC 4180 quoting, CRLF line ending
    return buf.getvalue()


def csv_header() -> str:
    """The CSV header line, line ending included."""
    return _csv_line(list(CSV_COLUMNS))


def to_csv_row(record: AuditRecord) -> str:
    """One CSV line (details as canonical JSON, empty cell for null), line ending included."""
    d = to_dict(record)
    d["details"] = canonical_json(record.details)
    return _csv_line(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
