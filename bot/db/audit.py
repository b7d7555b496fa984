"""The audit log repository: append-only, HMAC-chained, idempotent per (event_id, action)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg
import orjson
from mautrix.util.async_db import Connection, Database

from bot.mautrix_compat import current_connection
from bot.policy.audit_chain import (
    GENESIS_HASH,
    RECORD_FIELDS,
    AuditRecord,
    ChainVerifier,
    Checkpoint,
    build_record,
    canonical_json,
    check_checkpoints,
    contains_float,
    derive_chain_key,
)
from bot.policy.storable import is_storable_text, storable, storable_text

# pg_advisory_xact_lock key serializing appenders: the chain's next seq and prev_hash are read
# and written under it, and it is held until the (outermost) transaction ends. An advisory lock
# needs no table privilege beyond INSERT, unlike LOCK TABLE ... EXCLUSIVE.
AUDIT_APPEND_LOCK_ID = 0x43_68_61_70_00_00_00_02

COLUMNS = RECORD_FIELDS
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit_log"  # noqa: S608 (constant column list)
STREAM_PREFETCH = 500


@dataclass(frozen=True)
class AuditEntry:
    """A row to append; the log assigns seq, ts (DB clock), prev_hash and hash."""

    actor: str
    action: str
    room_id: str | None = None
    event_id: str | None = None
    subject: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditFilter:
    """Export filter; every field set narrows the result. `user` matches actor OR subject.

    `since` is inclusive, `until` exclusive.
    """

    room_id: str | None = None
    user: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `AuditLog.verify()`; `rows` counts every row read, broken or not.

    `first_broken_seq` is the first row the chain itself rejects; failing that, the first row a
    checkpoint shows missing (`truncated_after_seq` + 1) or different (`checkpoint_mismatch_seq`).
    """

    ok: bool
    rows: int
    first_broken_seq: int | None
    head_hash: str = GENESIS_HASH
    """Hash of the last row of the intact prefix: record it elsewhere to catch a cut tail."""
    truncated_after_seq: int | None = None
    """The last stored seq, when a checkpoint names a later row: the tail was cut."""
    checkpoint_mismatch_seq: int | None = None
    """The first checkpointed seq whose stored hash differs: history was rewritten."""
    checkpoints: int = 0
    """How many checkpoints the chain was checked against."""
    keyed_from_seq: int = 1
    """Rows before this seq predate the keyed chain and carry plain SHA-256 hashes."""


@dataclass(frozen=True)
class ChainHead:
    """The last row of the log."""

    seq: int
    hash: str
    ts: datetime


def _loads(text: str) -> Any:
    """json.loads, three times faster: orjson reads JSON to the same values, except integers
    beyond 64 bits, which it makes floats: whatever holds a float is read again by json."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return json.loads(text) if contains_float(value) else value


def _record(row: Mapping[str, Any]) -> AuditRecord:
    details = row["details"]
    return AuditRecord(
        seq=row["seq"],
        ts=row["ts"],
        actor=row["actor"],
        action=row["action"],
        room_id=row["room_id"],
        event_id=row["event_id"],
        subject=row["subject"],
        details=_loads(details) if isinstance(details, str) else dict(details),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


class AuditLog:
    """Appends to, verifies and exports the `audit_log` table.

    `hmac_key` is `audit.hmac_key`; the chain is keyed with a key derived from it, which never
    enters the database.
    """

    def __init__(self, db: Database, hmac_key: str | bytes) -> None:
        self.db = db
        self._chain_key = derive_chain_key(hmac_key)

    async def append(self, entries: Sequence[AuditEntry]) -> list[int]:
        """Append a batch in one transaction; return the seqs written.

        Entries whose (event_id, action) is already stored, or repeated within the batch, are
        skipped. Joins the caller's transaction when there is one (see `db.transaction`).
        """
        if not entries:
            return []
        # U+0000 and lone surrogates are escaped (Postgres and UTF-8 refuse them), so any text
        # is storable and the hash covers exactly what is stored. Serialized before touching
        # the database: bad data fails here, loudly.
        entries, details_json = zip(*(_storable_entry(e) for e in entries), strict=True)
        conn: Connection
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_APPEND_LOCK_ID)
            # A statement of its own, after the lock: under READ COMMITTED it then sees the
            # chain head the previous lock holder committed. clock_timestamp(), not now(), so
            # ts never goes backwards along seq. details go through jsonb and back so the hash
            # covers exactly what verify() will read (jsonb normalizes numbers).
            prep = await conn.fetchrow(
                """
                SELECT
                    (SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1) AS head_seq,
                    (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS head_hash,
                    clock_timestamp() AS ts,
                    $1::jsonb[]::text[] AS details,
                    ARRAY(
                        SELECT u.i FROM unnest($2::text[], $3::text[]) WITH ORDINALITY
                            AS u(event_id, action, i)
                        WHERE EXISTS (
                            SELECT 1 FROM audit_log a
                            WHERE a.event_id = u.event_id AND a.action = u.action
                        )
                    ) AS stored
                """,
                list(details_json),
                [e.event_id for e in entries],
                [e.action for e in entries],
            )
            assert prep is not None
            chained = self._chain(entries, prep)
            if chained:
                await conn.copy_records_to_table(
                    "audit_log",
                    records=[_row(record, details) for record, details in chained],
                    columns=COLUMNS,
                )
        return [record.seq for record, _ in chained]

    def _chain(
        self, entries: Sequence[AuditEntry], prep: Mapping[str, Any]
    ) -> list[tuple[AuditRecord, str]]:
        """The new records, each with its details as jsonb text, skipping replays."""
        seq: int = prep["head_seq"] or 0
        prev_hash: str = prep["head_hash"] or GENESIS_HASH
        ts: datetime = prep["ts"]
        stored = {i - 1 for i in prep["stored"]}
        seen: set[tuple[str, str]] = set()
        chained = []
        for i, (entry, details) in enumerate(zip(entries, prep["details"], strict=True)):
            if entry.event_id is not None:
                key = (entry.event_id, entry.action)
                if i in stored or key in seen:
                    continue
                seen.add(key)
            seq += 1
            record = build_record(
                seq,
                ts,
                entry.actor,
                entry.action,
                entry.room_id,
                entry.event_id,
                entry.subject,
                # jsonb may write a float another way: hash what verify() will read.
                json.loads(details) if contains_float(entry.details) else entry.details,
                prev_hash,
                key=self._chain_key,
            )
            chained.append((record, details))
            prev_hash = record.hash
        return chained

    async def exists(self, event_id: str, action: str) -> bool:
        """Whether (event_id, action) has been audited."""
        found: bool = await self.db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_log WHERE event_id = $1 AND action = $2)",
            event_id,
            action,
        )
        return found

    async def audited(self, event_ids: Sequence[str]) -> set[tuple[str, str]]:
        """Every (event_id, action) already audited for these events: one query for a batch
        instead of one `exists` per event."""
        if not event_ids:
            return set()
        rows = await self.db.fetch(
            "SELECT event_id, action FROM audit_log WHERE event_id = ANY($1::text[])",
            list(event_ids),
        )
        return {(r["event_id"], r["action"]) for r in rows}

    async def tail(self, n: int, room_id: str | None = None) -> list[AuditRecord]:
        """The last `n` rows (of one room, if given), oldest first."""
        if room_id is None:
            rows = await self.db.fetch(f"{_SELECT} ORDER BY seq DESC LIMIT $1", n)
        else:
            rows = await self.db.fetch(
                f"{_SELECT} WHERE room_id = $1 ORDER BY seq DESC LIMIT $2", room_id, n
            )
        return [_record(row) for row in reversed(rows)]

    async def head(self) -> ChainHead | None:
        """The last row's seq, hash and time, or None while the log is empty."""
        row = await self.db.fetchrow(
            "SELECT seq, hash, ts FROM audit_log ORDER BY seq DESC LIMIT 1"
        )
        return None if row is None else ChainHead(row["seq"], row["hash"], row["ts"])

    async def hash_at(self, seq: int) -> str | None:
        """The stored hash of row `seq`."""
        found: str | None = await self.db.fetchval(
            "SELECT hash FROM audit_log WHERE seq = $1", seq
        )
        return found

    async def keyed_from_seq(self) -> int:
        """The first seq hashed with the key (rows before it predate the keyed chain).

        1 when the boundary is missing, so a removed boundary makes old rows fail, never pass.
        """
        found: int | None = await self.db.fetchval(
            "SELECT keyed_from_seq FROM audit_chain_meta WHERE id"
        )
        return found or 1

    async def verify(self, checkpoints: Sequence[Checkpoint] = ()) -> VerifyResult:
        """Recompute the whole chain, streaming rows in seq order, and check it against
        `checkpoints` (heads published outside the database), which catch a cut tail or a
        rewritten prefix that a chain alone cannot show."""
        keyed_from = await self.keyed_from_seq()
        verifier = ChainVerifier(key=self._chain_key, keyed_from_seq=keyed_from)
        wanted = {cp.seq for cp in checkpoints}
        stored: dict[int, str] = {}
        last_seq = 0
        async for records in self._chunks(f"{_SELECT} ORDER BY seq"):
            for record in records:
                verifier.feed(record)
                if record.seq in wanted:
                    stored[record.seq] = record.hash
            if records:
                last_seq = records[-1].seq
        broken = verifier.first_broken_seq
        anchored = check_checkpoints(stored, last_seq, checkpoints)
        if broken is None and anchored.truncated_after_seq is not None:
            broken = anchored.truncated_after_seq + 1
        if broken is None and anchored.checkpoint_mismatch_seq is not None:
            broken = anchored.checkpoint_mismatch_seq
        return VerifyResult(
            ok=broken is None,
            rows=verifier.rows,
            first_broken_seq=broken,
            head_hash=verifier.head_hash or GENESIS_HASH,
            truncated_after_seq=anchored.truncated_after_seq,
            checkpoint_mismatch_seq=anchored.checkpoint_mismatch_seq,
            checkpoints=len(checkpoints),
            keyed_from_seq=keyed_from,
        )

    async def export(self, filters: AuditFilter) -> AsyncGenerator[AuditRecord, None]:
        """Rows matching `filters`, in seq order, streamed.

        Stopping early? Close the iterator (`contextlib.aclosing`) so its connection returns.
        """
        clauses: list[str] = []
        args: list[Any] = []

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if filters.room_id is not None:
            clauses.append(f"room_id = {param(filters.room_id)}")
        if filters.user is not None:
            p = param(filters.user)
            clauses.append(f"(actor = {p} OR subject = {p})")
        if filters.action is not None:
            clauses.append(f"action = {param(filters.action)}")
        if filters.since is not None:
            clauses.append(f"ts >= {param(filters.since)}")
        if filters.until is not None:
            clauses.append(f"ts < {param(filters.until)}")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        async for record in self._stream(f"{_SELECT}{where} ORDER BY seq", *args):
            yield record

    async def _stream(self, query: str, *args: Any) -> AsyncGenerator[AuditRecord, None]:
        async for records in self._chunks(query, *args):
            for record in records:
                yield record

    async def _chunks(self, query: str, *args: Any) -> AsyncGenerator[list[AuditRecord], None]:
        """The rows in chunks of STREAM_PREFETCH (a row at a time costs verify a fifth more)."""
        async with _reader(self.db) as conn:
            raw = cast(asyncpg.Connection, conn.wrapped)
            if raw.is_in_transaction():
                # Inside the caller's transaction: read what it sees, uncommitted rows included.
                cursor = await raw.cursor(query, *args)
                while rows := await cursor.fetch(STREAM_PREFETCH):
                    yield [_record(row) for row in rows]
                return
            # One snapshot for the whole read, however long the consumer takes.
            async with raw.transaction(isolation="repeatable_read", readonly=True):
                cursor = await raw.cursor(query, *args)
                while rows := await cursor.fetch(STREAM_PREFETCH):
                    yield [_record(row) for row in rows]


@asynccontextmanager
async def _reader(db: Database) -> AsyncIterator[Connection]:
    """The caller's connection if it has one, else a pool connection not put in context.

    An async generator may be finalized in another context, where resetting mautrix's
    connection context variable (as `Database.acquire` does) would fail.
    """
    current = current_connection()
    if current is not None:
        yield current
        return
    async with db.acquire_direct() as conn:
        yield conn


def _storable_entry(entry: AuditEntry) -> tuple[AuditEntry, str]:
    """The entry with every text storable, and its details as JSON."""
    texts = (entry.actor, entry.action, entry.room_id, entry.event_id, entry.subject)
    try:  # the common case, checked at C speed: orjson refuses lone surrogates
        details_json = orjson.dumps(dict(entry.details)).decode()
    except TypeError:
        details_json = None
    if (
        details_json is not None
        and "\\u0000" not in details_json
        and all(t is None or is_storable_text(t) for t in texts)
    ):
        return entry, details_json

    def text(value: str | None) -> str | None:
        return None if value is None else storable_text(value)

    storable_entry = AuditEntry(
        actor=storable_text(entry.actor),
        action=storable_text(entry.action),
        room_id=text(entry.room_id),
        event_id=text(entry.event_id),
        subject=text(entry.subject),
        details=storable(dict(entry.details)),
    )
    return storable_entry, canonical_json(dict(storable_entry.details))


def _row(record: AuditRecord, details_json: str) -> tuple[Any, ...]:
    return (
        record.seq,
        record.ts,
        record.actor,
        record.action,
        record.room_id,
        record.event_id,
        record.subject,
        details_json,
        record.prev_hash,
        record.hash,
    )
