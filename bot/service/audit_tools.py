"""The audit log in chat and over HTTP: tail, export (as an uploaded file), verify — each use
of export and verify itself audited (`audit.exported`, `audit.verified`)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.db.audit import AuditEntry, AuditFilter, AuditLog, VerifyResult
from bot.db.audit_format import csv_header, to_csv_row, to_jsonl
from bot.db.unit_of_work import record_audit
from bot.policy.audit_chain import AuditRecord, format_ts
from bot.policy.audit_checkpoint import Checkpoint

if TYPE_CHECKING:
    # A type only: `chaperone audit verify` and `export` then start without the Matrix layer.
    from bot.matrix.effects import MatrixEffects

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


def verify_details(result: VerifyResult, via: str, unreadable_checkpoints: int) -> dict[str, Any]:
    """What `audit.verified` records about a verify run."""
    details: dict[str, Any] = {
        "ok": result.ok,
        "rows": result.rows,
        "first_broken_seq": result.first_broken_seq,
        "head_hash": result.head_hash,
        "checkpoints": result.checkpoints,
        "via": via,
    }
    if result.truncated_after_seq is not None:
        details["truncated_after_seq"] = result.truncated_after_seq
    if result.checkpoint_mismatch_seq is not None:
        details["checkpoint_mismatch_seq"] = result.checkpoint_mismatch_seq
    if unreadable_checkpoints:
        details["unreadable_checkpoint_lines"] = unreadable_checkpoints
    return details


def verify_summary(result: VerifyResult) -> str:
    """One line for people: intact, or where it broke and how."""
    anchors = f"{result.checkpoints} checkpoint(s)"
    if result.ok:
        return (
            f"audit log intact: {result.rows} rows, hash chain verified against {anchors} "
            f"(head {result.head_hash[:16]}…)"
        )
    if result.truncated_after_seq is not None and result.first_broken_seq == (
        result.truncated_after_seq + 1
    ):
        how = f"rows after seq {result.truncated_after_seq} were removed (a checkpoint names them)"
    elif result.checkpoint_mismatch_seq is not None and (
        result.first_broken_seq == result.checkpoint_mismatch_seq
    ):
        how = f"seq {result.checkpoint_mismatch_seq} differs from its published checkpoint"
    else:
        how = "the hash chain does not match"
    return (
        f"audit log BROKEN at seq {result.first_broken_seq}: {how} "
        f"({result.rows} rows read, {anchors})"
    )


CheckpointSource = Callable[[], tuple[list[Checkpoint], int]]


async def verify_and_record(
    audit: AuditLog,
    checkpoints: list[Checkpoint],
    unreadable_checkpoints: int,
    *,
    actor: str,
    via: str,
    room_id: str | None = None,
    event_id: str | None = None,
) -> VerifyResult:
    """Recompute the chain against `checkpoints` and audit the run (`audit.verified`): the
    one verify behind the CLI, the chat command and the HTTP API."""
    result = await audit.verify(checkpoints)
    details = verify_details(result, via, unreadable_checkpoints)
    await record_audit(
        audit,
        [
            AuditEntry(
                actor=actor,
                action="audit.verified",
                room_id=room_id,
                event_id=event_id,
                details=details,
            )
        ],
    )
    return result


class AuditTools:
    def __init__(
        self,
        audit: AuditLog,
        effects: MatrixEffects,
        checkpoints: CheckpointSource | None = None,
    ) -> None:
        """`checkpoints` gives every published head it can read and how many lines it could not."""
        self.audit = audit
        self.effects = effects
        self.checkpoints = checkpoints

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
        await record_audit(
            self.audit,
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
            ],
        )
        return ExportResult(rows, digest, filename)

    async def verify(
        self, *, actor: str, room_id: str | None, event_id: str | None, via: str
    ) -> VerifyResult:
        known, unreadable = self.checkpoints() if self.checkpoints is not None else ([], 0)
        return await verify_and_record(
            self.audit,
            known,
            unreadable,
            actor=actor,
            via=via,
            room_id=room_id,
            event_id=event_id,
        )


def exported_entry(
    actor: str,
    filters: AuditFilter,
    fmt: str,
    rows: int | None,
    sha256: str | None,
    *,
    room_id: str | None,
    event_id: str | None,
    extra: dict[str, Any],
    complete: bool = True,
) -> AuditEntry:
    """An `audit.exported` row; `complete` False for an export started or cut short."""
    details: dict[str, Any] = {
        "filters": filter_details(filters),
        "format": fmt,
        "complete": complete,
        **extra,
    }
    if rows is not None:
        details["rows"] = rows
    if sha256 is not None:
        details["sha256"] = sha256
    return AuditEntry(
        actor=actor, action="audit.exported", room_id=room_id, event_id=event_id, details=details
    )


@dataclass
class StreamedExport:
    """The audit rows of an export streamed to a reader who may stop early (HTTP, the CLI).

    One `audit.exported` row before the first line goes out (`complete: false`, stage
    `started`), so an export cut short is on the record too; then a second row with the
    outcome — `complete: true` and the row count, or stage `cut short` and the rows handed
    over before the cut. The log is append-only: the outcome is a new row naming the first
    (`started_seq`), never a change to it.
    """

    audit: AuditLog
    actor: str
    filters: AuditFilter
    fmt: str
    extra: dict[str, Any]
    started_seq: int | None = None

    async def started(self) -> None:
        seqs = await record_audit(self.audit, [self._entry(None, "started", complete=False)])
        self.started_seq = seqs[0] if seqs else None

    async def finished(self, rows: int) -> None:
        await record_audit(self.audit, [self._entry(rows, "finished", complete=True)])

    async def cut_short(self, rows_sent: int, reason: str) -> None:
        more = {"rows_sent": rows_sent, "reason": reason}
        await record_audit(self.audit, [self._entry(None, "cut short", complete=False, more=more)])

    def _entry(
        self, rows: int | None, stage: str, *, complete: bool, more: dict[str, Any] | None = None
    ) -> AuditEntry:
        extra = {**self.extra, "stage": stage, **(more or {})}
        if self.started_seq is not None:
            extra["started_seq"] = self.started_seq
        return exported_entry(
            self.actor,
            self.filters,
            self.fmt,
            rows,
            None,
            room_id=None,
            event_id=None,
            extra=extra,
            complete=complete,
        )
