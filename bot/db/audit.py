"""The audit log repository: append-only, HMAC-chained, idempotent per (event_id, action)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from typing import Any, NamedTuple, cast

import asyncpg
import orjson
from mautrix.util.async_db import Connection, Database

from bot.mautrix_compat.connection import current_connection
from bot.policy.audit_chain import (
    GENESIS_HASH,
    RECORD_FIELDS,
    AuditRecord,
    ChainVerifier,
    canonical_json,
    chain_hashes,
    contains_float,
    derive_chain_key,
)
from bot.policy.audit_checkpoint import Checkpoint, check_checkpoints
from bot.policy.storable import storable, storable_text

# pg_advisory_xact_lock key serializing appenders: the chain's next seq and prev_hash are read
# and written under it, and it is held until the (outermost) transaction ends. An advisory lock
# needs no table privilege beyond INSERT, unlike LOCK TABLE ... EXCLUSIVE.
AUDIT_APPEND_LOCK_ID = 0x43_68_61_70_00_00_00_02

COLUMNS = RECORD_FIELDS
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit_log"  # noqa: S608 (constant column list)
STREAM_PREFETCH = 500

# verify reads ts as the text the hash covers (format_ts's), written by Postgres: cheaper to
# read than a datetime. NULL for a time no record can hold (before year 1, after 9999,
# infinity), which then fails the check instead of the read; in between the text is
# unambiguous.
_TS_TEXT = """
    CASE WHEN ts >= '0001-01-01T00:00:00Z' AND ts < '10000-01-01T00:00:00Z'
        THEN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    END"""
_VERIFY_SELECT = "SELECT " + ", ".join(_TS_TEXT if c == "ts" else c for c in COLUMNS)


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
        rows = [_new_row(e) for e in entries]
        with_floats = [i for i, row in enumerate(rows) if row.floats]
        conn: Connection
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_APPEND_LOCK_ID)
            # A statement of its own, after the lock: under READ COMMITTED it then sees the
            # chain head the previous lock holder committed. clock_timestamp(), not now(), so
            # ts never goes backwards along seq. Details holding a float go through jsonb and
            # back, so the hash covers exactly what verify() will read (jsonb normalizes
            # numbers; it keeps everything else as orjson wrote it).
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
                [rows[i].details_json for i in with_floats],
                [row.event_id for row in rows],
                [row.action for row in rows],
            )
            assert prep is not None
            for i, stored_json in zip(with_floats, prep["details"], strict=True):
                rows[i] = rows[i]._replace(
                    details=json.loads(stored_json), details_json=stored_json
                )
            rows = _unstored(rows, prep["stored"])
            first: int = (prep["head_seq"] or 0) + 1
            ts: datetime = prep["ts"]
            head_hash: str = prep["head_hash"] or GENESIS_HASH
            hashes = chain_hashes(
                first, ts, [row[:6] for row in rows], head_hash, key=self._chain_key
            )
            if rows:
                await conn.copy_records_to_table(
                    "audit_log",
                    records=[
                        _copy_row(seq, ts, row, prev_hash, hash_)
                        for seq, row, prev_hash, hash_ in zip(
                            count(first), rows, [head_hash, *hashes], hashes
                        )
                    ],
                    columns=COLUMNS,
                )
        return list(range(first, first + len(rows)))

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
        query = f"{_VERIFY_SELECT} FROM audit_log ORDER BY seq"
        async for rows in self._row_chunks(query, read_ahead=True):
            verifier.feed_rows(rows)
            if wanted:
                stored.update((row["seq"], row["hash"]) for row in rows if row["seq"] in wanted)
            last_seq = rows[-1]["seq"]
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
        async for rows in self._row_chunks(query, *args):
            yield [_record(row) for row in rows]

    async def _row_chunks(
        self, query: str, *args: Any, read_ahead: bool = False
    ) -> AsyncGenerator[list[asyncpg.Record], None]:
        """The rows in chunks of STREAM_PREFETCH (a row at a time costs verify a fifth more).

        `read_ahead` asks for the next chunk before handing over this one, so Postgres reads
        it meanwhile: only for a consumer that makes no other query until it asks for the next
        chunk (the connection may be the caller's), as verify.
        """
        chunks = _read_ahead if read_ahead else _one_by_one
        async with _reader(self.db) as conn:
            raw = cast(asyncpg.Connection, conn.wrapped)
            if raw.is_in_transaction():
                # Inside the caller's transaction: read what it sees, uncommitted rows included.
                async for rows in chunks(await raw.cursor(query, *args)):
                    yield rows
                return
            # One snapshot for the whole read, however long the consumer takes.
            async with raw.transaction(isolation="repeatable_read", readonly=True):
                async for rows in chunks(await raw.cursor(query, *args)):
                    yield rows


async def _one_by_one(
    cursor: asyncpg.cursor.Cursor[Any],
) -> AsyncIterator[list[asyncpg.Record]]:
    while rows := await cursor.fetch(STREAM_PREFETCH):
        yield rows


async def _read_ahead(cursor: asyncpg.cursor.Cursor[Any]) -> AsyncIterator[list[asyncpg.Record]]:
    """The cursor's rows in chunks, the next chunk asked for before this one is handed over:
    Postgres reads it while the caller works on this one."""
    pending = asyncio.ensure_future(cursor.fetch(STREAM_PREFETCH))
    try:
        while rows := await pending:
            pending = asyncio.ensure_future(cursor.fetch(STREAM_PREFETCH))
            await asyncio.sleep(0)  # the request goes out now
            yield rows
    finally:
        await pending  # the connection is free again when the reader stops early


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


class _NewRow(NamedTuple):
    """An entry to append, every text storable, its details also as JSON text."""

    actor: str
    action: str
    room_id: str | None
    event_id: str | None
    subject: str | None
    details: dict[str, Any]
    details_json: str
    floats: bool
    """Whether details hold a float: then they are hashed as jsonb gives them back."""


def _new_row(entry: AuditEntry) -> _NewRow:
    details = dict(entry.details)
    texts = (entry.actor, entry.action, entry.room_id, entry.event_id, entry.subject)
    try:  # the common case, checked at C speed: UTF-8 and orjson refuse lone surrogates
        details_json = orjson.dumps(details).decode()
        joined = "".join(filter(None, texts))
        joined.encode()
        as_is = "\x00" not in joined and "\\u0000" not in details_json
    except (TypeError, UnicodeEncodeError):
        as_is = False
    if not as_is:

        def text(value: str | None) -> str | None:
            return None if value is None else storable_text(value)

        entry = AuditEntry(
            actor=storable_text(entry.actor),
            action=storable_text(entry.action),
            room_id=text(entry.room_id),
            event_id=text(entry.event_id),
            subject=text(entry.subject),
        )
        details = storable(details)
        details_json = canonical_json(details)
    return _NewRow(
        entry.actor,
        entry.action,
        entry.room_id,
        entry.event_id,
        entry.subject,
        details,
        details_json,
        contains_float(details),
    )


def _unstored(rows: list[_NewRow], stored: Iterable[int]) -> list[_NewRow]:
    """`rows` less those already stored (`stored`: their 1-based positions) or repeated."""
    skip = {i - 1 for i in stored}
    seen: set[tuple[str, str]] = set()
    kept = []
    for i, row in enumerate(rows):
        if row.event_id is not None:
            key = (row.event_id, row.action)
            if i in skip or key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept


def _copy_row(seq: int, ts: datetime, row: _NewRow, prev_hash: str, hash_: str) -> tuple[Any, ...]:
    return (
        seq,
        ts,
        row.actor,
        row.action,
        row.room_id,
        row.event_id,
        row.subject,
        row.details_json,
        prev_hash,
        hash_,
    )
