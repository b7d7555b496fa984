"""The audit log in chat and over HTTP: tail, export (as an uploaded file), verify — each use
of export and verify itself audited (`audit.exported`, `audit.verified`)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.db.audit import AuditEntry, AuditFilter, AuditLog, VerifyResult
from bot.db.audit_format import csv_header, to_csv_row, to_jsonl
from bot.matrix.effects import MatrixEffects
from bot.policy.audit_chain import AuditRecord, format_ts

MIMETYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
TAIL_DEFAULT = 20
TAIL_MAX = 200


def filter_details(filters: AuditFilter) -> dict[str, str]:
    """The filters as they are recorded in `audit.exported` (set ones only)."""
    values = {
        "room": filters.room_id,
        "user": filters.user,
        "action": filters.action,
        "since": format_ts(filters.since) if filters.since else None,
        "until": format_ts(filters.until) if filters.until else None,
    }
    return {k: v for k, v in values.items() if v is not None}


async def export_lines(
    audit: AuditLog, filters: AuditFilter, fmt: str
) -> AsyncGenerator[str, None]:
    """The export, line by line, in the CLI's formats (CSV with its header)."""
    if fmt == "csv":
        yield csv_header()
    async with aclosing(audit.export(filters)) as records:
        async for record in records:
            yield to_csv_row(record) if fmt == "csv" else to_jsonl(record)


def tail_line(record: AuditRecord, *, with_room: bool) -> str:
    ts = record.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = f"#{record.seq} {ts} {record.action} by {record.actor}"
    if record.subject:
        text += f" → {record.subject}"
    if with_room and record.room_id:
        text += f" in {record.room_id}"
    return text


@dataclass(frozen=True)
class ExportResult:
    rows: int
    sha256: str
    filename: str


class AuditTools:
    def __init__(self, audit: AuditLog, effects: MatrixEffects) -> None:
        self.audit = audit
        self.effects = effects

    async def tail_lines(self, n: int, room_id: str | None) -> list[str]:
        """The last `n` rows of one room (or of all rooms when `room_id` is None)."""
        records = await self.audit.tail(n, room_id)
        scope = f"in {room_id}" if room_id else "across all rooms"
        if not records:
            return [f"No audit rows {scope} yet."]
        lines = [f"Last {len(records)} audit row(s) {scope}:"]
        lines += [tail_line(r, with_room=room_id is None) for r in records]
        return lines

    async def export_to_room(
        self,
        filters: AuditFilter,
        fmt: str,
        *,
        reply_room_id: str,
        actor: str,
        event_id: str | None,
        now: datetime,
    ) -> ExportResult:
        """Upload the export as a file (encrypted in an encrypted room), then audit it."""
        parts = [line async for line in export_lines(self.audit, filters, fmt)]
        data = "".join(parts).encode()
        rows = len(parts) - (1 if fmt == "csv" else 0)
        digest = hashlib.sha256(data).hexdigest()
        scope = "all-rooms" if filters.room_id is None else "room"
        filename = f"audit-{scope}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.{fmt}"
        file_event = await self.effects.upload_file(reply_room_id, data, filename, MIMETYPES[fmt])
        await self.audit.append(
            [
                exported_entry(
                    actor,
                    filters,
                    fmt,
                    rows,
                    digest,
                    room_id=reply_room_id,
                    event_id=event_id,
                    extra={"via": "chat", "file_event_id": file_event},
                )
            ]
        )
        return ExportResult(rows, digest, filename)

    async def verify(
        self, *, actor: str, room_id: str | None, event_id: str | None, via: str
    ) -> VerifyResult:
        result = await self.audit.verify()
        details: dict[str, Any] = {
            "ok": result.ok,
            "rows": result.rows,
            "first_broken_seq": result.first_broken_seq,
            "head_hash": result.head_hash,
            "via": via,
        }
        await self.audit.append(
            [
                AuditEntry(
                    actor=actor,
                    action="audit.verified",
                    room_id=room_id,
                    event_id=event_id,
                    details=details,
                )
            ]
        )
        return result


def exported_entry(
    actor: str,
    filters: AuditFilter,
    fmt: str,
    rows: int,
    sha256: str | None,
    *,
    room_id: str | None,
    event_id: str | None,
    extra: dict[str, Any],
) -> AuditEntry:
    details: dict[str, Any] = {
        "filters": filter_details(filters),
        "format": fmt,
        "rows": rows,
        **extra,
    }
    if sha256 is not None:
        details["sha256"] = sha256
    return AuditEntry(
        actor=actor, action="audit.exported", room_id=room_id, event_id=event_id, details=details
    )
