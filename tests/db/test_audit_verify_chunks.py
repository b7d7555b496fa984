"""verify against real Postgres reads the chain in chunks of STREAM_PREFETCH rows, each chunk
asked for while the one before is checked: a tampered row is found at its exact seq wherever
it sits in a chunk, at either edge, and across the keyed/unkeyed boundary."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg
import pytest

from bot.db.audit import STREAM_PREFETCH, AuditEntry, AuditLog
from bot.policy.audit_chain import GENESIS_HASH, build_record, derive_chain_key
from bot.policy.audit_checkpoint import Checkpoint
from tests.db.conftest import TEST_HMAC_KEY

ROWS = 1250  # chunks of seqs 1-500, 501-1000, 1001-1250
KEY = derive_chain_key(TEST_HMAC_KEY)


def entries(n: int, start: int = 1) -> list[AuditEntry]:
    return [
        AuditEntry(
            actor="@therapist:clinic.example",
            action="message.sent",
            room_id="!room:clinic.example",
            event_id=f"$e{i}",
            subject="@patient:clinic.example",
            details={"hmac": f"{i:064x}", "msgtype": "m.text", "encrypted": True},
        )
        for i in range(start, start + n)
    ]


async def as_superuser(db_url: str, *statements: str) -> None:
    """Run `statements` past the append-only triggers, as a superuser could."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def hashes(db_url: str) -> dict[int, str]:
    conn = await asyncpg.connect(db_url)
    try:
        return {r["seq"]: r["hash"] for r in await conn.fetch("SELECT seq, hash FROM audit_log")}
    finally:
        await conn.close()


async def rehash_with_the_key(db_url: str, seq: int) -> None:
    """Someone holding the key changes row `seq` and gives it a valid hash: the next row's
    link breaks."""
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT * FROM audit_log WHERE seq = $1", seq)
        assert row is not None
        forged = build_record(
            seq,
            row["ts"],
            row["actor"],
            "consent.granted",
            row["room_id"],
            row["event_id"],
            row["subject"],
            {},
            row["prev_hash"],
            key=KEY,
        )
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "UPDATE audit_log SET action = $2, details = '{}', hash = $3 WHERE seq = $1",
            seq,
            forged.action,
            forged.hash,
        )
    finally:
        await conn.close()


def changed_details(seq: int) -> Callable[[str], Awaitable[None]]:
    return lambda url: as_superuser(
        url, f"UPDATE audit_log SET details = details || '{{\"n\": 1}}' WHERE seq = {seq}"
    )


def deleted(seq: int) -> Callable[[str], Awaitable[None]]:
    return lambda url: as_superuser(url, f"DELETE FROM audit_log WHERE seq = {seq}")


def moved_to(seq: int, ts: str) -> Callable[[str], Awaitable[None]]:
    return lambda url: as_superuser(url, f"UPDATE audit_log SET ts = {ts} WHERE seq = {seq}")


CASES: list[tuple[str, Callable[[str], Awaitable[None]], int, int]] = [
    # (what, tampering, first broken seq, rows left)
    ("middle of the second chunk", changed_details(777), 777, ROWS),
    ("last row of the first chunk", changed_details(500), 500, ROWS),
    ("first row of the second chunk", changed_details(501), 501, ROWS),
    ("first row of the last chunk", changed_details(1001), 1001, ROWS),
    ("last row", changed_details(ROWS), ROWS, ROWS),
    ("row 501 deleted: a gap between chunks", deleted(501), 502, ROWS - 1),
    ("row 500 deleted: 501 ends the first chunk", deleted(500), 501, ROWS - 1),
    (
        "row 1000 rewritten with the key: the next chunk's first row no longer links",
        lambda url: rehash_with_the_key(url, 1000),
        1001,
        ROWS,
    ),
    ("the same time BC (the same text)", moved_to(600, "ts - interval '4051 years'"), 600, ROWS),
    ("a time no record can hold", moved_to(600, "'infinity'"), 600, ROWS),
]


@pytest.mark.parametrize(
    ("tamper", "broken", "rows"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_tampering_is_found_at_its_exact_seq_wherever_the_chunks_split(
    audit: AuditLog,
    db_url: str,
    tamper: Callable[[str], Awaitable[None]],
    broken: int,
    rows: int,
) -> None:
    assert STREAM_PREFETCH == 500  # the cases name the rows at its chunk edges
    await audit.append(entries(ROWS))
    assert (await audit.verify()).ok
    await tamper(db_url)
    result = await audit.verify()
    assert (result.ok, result.first_broken_seq, result.rows) == (False, broken, rows)
    after = await hashes(db_url)
    assert result.head_hash == after[max(seq for seq in after if seq < broken)]


async def test_the_same_time_bc_is_not_the_same_time(audit: AuditLog, db_url: str) -> None:
    """A row moved to the same date and time BC: Postgres's to_char writes both alike, so
    verify's text for times must tell them apart."""
    await audit.append(entries(3))
    as_text = """to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    query = f"SELECT {as_text} FROM audit_log WHERE seq = 2"  # noqa: S608
    conn = await asyncpg.connect(db_url)
    try:
        before = await conn.fetchval(query)
        await moved_to(2, "ts - interval '4051 years'")(db_url)
        assert await conn.fetchval(query) == before
        assert await conn.fetchval("SELECT ts < '0001-01-01Z' FROM audit_log WHERE seq = 2")
    finally:
        await conn.close()
    assert (await audit.verify()).first_broken_seq == 2


async def test_checkpoints_at_chunk_edges(audit: AuditLog, db_url: str) -> None:
    await audit.append(entries(ROWS))
    stored = await hashes(db_url)
    published = [Checkpoint(seq, stored[seq]) for seq in (500, 501, 1000, ROWS)]
    result = await audit.verify(published)
    assert (result.ok, result.checkpoints, result.head_hash) == (True, 4, stored[ROWS])

    wrong = [*published[:1], Checkpoint(501, stored[502]), *published[2:]]
    result = await audit.verify(wrong)
    assert (result.ok, result.checkpoint_mismatch_seq, result.first_broken_seq) == (
        False,
        501,
        501,
    )


@pytest.mark.parametrize("keyed_from", [300, 501], ids=["inside a chunk", "at a chunk edge"])
async def test_unkeyed_rows_before_the_boundary_wherever_it_falls(
    audit: AuditLog, db_url: str, keyed_from: int
) -> None:
    """A database from before the keyed chain: SHA-256 rows up to the boundary, whole-second
    times among them (orjson would write those without a fraction)."""
    conn = await asyncpg.connect(db_url)
    try:
        start: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        prev, legacy = GENESIS_HASH, []
        for seq in range(1, keyed_from):
            ts = start + timedelta(microseconds=0 if seq % 3 else seq)
            r = build_record(seq, ts, "system", "bot.started", None, None, None, {"s": seq}, prev)
            details = f'{{"s": {seq}}}'
            legacy.append((seq, ts, r.actor, r.action, None, None, None, details, prev, r.hash))
            prev = r.hash
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM audit_chain_meta")
        await conn.execute("INSERT INTO audit_chain_meta (keyed_from_seq) VALUES ($1)", keyed_from)
        await conn.copy_records_to_table("audit_log", records=legacy)
    finally:
        await conn.close()
    await audit.append(entries(400))
    result = await audit.verify()
    assert (result.ok, result.rows, result.keyed_from_seq) == (True, keyed_from + 399, keyed_from)

    await changed_details(keyed_from - 1)(db_url)  # the last unkeyed row
    assert (await audit.verify()).first_broken_seq == keyed_from - 1
