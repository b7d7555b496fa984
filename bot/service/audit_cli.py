"""Audit verify and export for the CLI: open the database, run the check, format the rows."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mautrix.util.async_db import Database

from bot.config import Config
from bot.db.audit import AuditFilter, AuditLog
from bot.db.audit_format import csv_header, to_csv_row, to_jsonl
from bot.db.database import EmbeddedPostgres, open_main_database
from bot.policy.audit_chain import AuditRecord
from bot.service.audit_checkpoints import read_checkpoint_file
from bot.service.audit_tools import StreamedExport, verify_and_record, verify_summary

FILTER_KEYS = ("room", "user", "action", "since", "until")


class FilterError(ValueError):
    """A bad export filter; the message says which and what is expected."""


def _parse_time(key: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(
            f"{key}: '{value}' is not a date or time; expected e.g. 2026-11-01 or "
            "2026-11-01T09:30:00+00:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_filters(words: Sequence[str]) -> AuditFilter:
    """`room=.. user=.. action=.. since=.. until=..` into an AuditFilter."""
    values: dict[str, str] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or key not in FILTER_KEYS or not value:
            raise FilterError(
                f"'{word}' is not a filter; expected key=value with key one of "
                + ", ".join(FILTER_KEYS)
            )
        values[key] = value
    since = _parse_time("since", values["since"]) if "since" in values else None
    until = _parse_time("until", values["until"]) if "until" in values else None
    if since and until and since >= until:
        raise FilterError("since must be before until")
    return AuditFilter(
        room_id=values.get("room"),
        user=values.get("user"),
        action=values.get("action"),
        since=since,
        until=until,
    )


@asynccontextmanager
async def main_database(config: Config) -> AsyncIterator[Database]:
    embedded = None
    url, owner_url = config.database.url, config.database.owner_url
    if not url:
        embedded = EmbeddedPostgres(Path(config.bot.data_dir))
        url = await embedded.astart()
        owner_url = embedded.owner_url
    main = await open_main_database(url, owner_url=owner_url or None)
    try:
        yield main
    finally:
        await main.stop()
        if embedded is not None:
            await embedded.astop()


def cli_actor() -> str:
    """Who ran a CLI command, for the audit row: the operating-system user."""
    return f"cli:{getpass.getuser()}"


async def verify(config: Config) -> tuple[bool, str]:
    """Recompute the chain and check it against `audit.checkpoint_file`; (ok, one line)."""
    checkpoints, unreadable = (
        read_checkpoint_file(config.audit.checkpoint_file)
        if config.audit.checkpoint_file
        else ([], 0)
    )
    async with main_database(config) as db:
        audit = AuditLog(db, config.audit.hmac_key)
        result = await verify_and_record(
            audit, checkpoints, unreadable, actor=cli_actor(), via="cli"
        )
    message = verify_summary(result)
    if unreadable:
        message += f"; {unreadable} line(s) of the checkpoint file are not checkpoints"
    return result.ok, message


class ExportCutShort(Exception):
    """The export's reader went away before the end (`chaperone audit export | head`)."""

    def __init__(self, rows_written: int) -> None:
        super().__init__(f"the output was closed after {rows_written} row(s)")
        self.rows_written = rows_written


async def export(config: Config, filters: AuditFilter, fmt: str, out: TextIO) -> int:
    """Write the export to `out` and return its row count; ExportCutShort when `out` is closed
    early. Audited before the first line goes out and again at the end (StreamedExport)."""
    async with main_database(config) as db:
        audit = AuditLog(db, config.audit.hmac_key)
        record = StreamedExport(audit, cli_actor(), filters, fmt, extra={"via": "cli"})
        rows = 0
        async with aclosing(audit.export(filters)) as records:
            # The first row fixes the read's snapshot, so the `started` row is not part of it.
            first = await anext(records, None)
            await record.started()
            try:
                if fmt == "csv":
                    out.write(csv_header())
                if first is not None:
                    out.write(_line(first, fmt))
                    rows = 1
                    async for row in records:
                        out.write(_line(row, fmt))
                        rows += 1
                out.flush()
            except BrokenPipeError:
                await record.cut_short(rows, "output closed")
                raise ExportCutShort(rows) from None
        await record.finished(rows)
    return rows


def _line(record: AuditRecord, fmt: str) -> str:
    return to_csv_row(record) if fmt == "csv" else to_jsonl(record)
