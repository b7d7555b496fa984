"""The audit log against real Postgres: append-only, chained, idempotent, exportable."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from mautrix.util.async_db import Database

from bot.db.audit import AuditEntry, AuditFilter, AuditLog
from bot.db.database import transaction
from bot.db.sync_state import SyncState
from bot.policy.audit_chain import GENESIS_HASH, AuditRecord, derive_chain_key, first_broken
from tests.db.conftest import TEST_HMAC_KEY

ROOM_A = "!a:clinic.example"
ROOM_B = "!b:clinic.example"
THERAPIST = "@therapist:clinic.example"
PATIENT = "@patient:clinic.example"


def entries(n: int, start: int = 1, **kw: Any) -> list[AuditEntry]:
    return [
        AuditEntry(
            actor=THERAPIST,
            action="message.sent",
            room_id=ROOM_A,
            event_id=f"$e{i}",
            subject=PATIENT,
            details={"i": i},
            **kw,
        )
        for i in range(start, start + n)
    ]


async def all_rows(db: Database) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM audit_log ORDER BY seq")


async def collect(audit: AuditLog, f: AuditFilter) -> list[AuditRecord]:
    return [r async for r in audit.export(f)]


async def test_append_then_verify(audit: AuditLog) -> None:
    assert await audit.append(entries(3)) == [1, 2, 3]
    assert await audit.append(entries(2, start=4)) == [4, 5]
    result = await audit.verify()
    assert (result.ok, result.rows, result.first_broken_seq) == (True, 5, None)
    records = await audit.tail(10)
    assert result.head_hash == records[-1].hash
    assert records[0].prev_hash == GENESIS_HASH
    assert first_broken(records, key=derive_chain_key(TEST_HMAC_KEY)) is None
    assert all(r.ts.tzinfo is not None for r in records)
    assert [r.ts for r in records] == sorted(r.ts for r in records)


async def test_empty_log_verifies(audit: AuditLog) -> None:
    result = await audit.verify()
    assert (result.ok, result.rows, result.first_broken_seq) == (True, 0, None)
    assert await audit.append([]) == []


async def test_replay_is_idempotent(audit: AuditLog, db: Database) -> None:
    batch = entries(5)
    assert await audit.append(batch) == [1, 2, 3, 4, 5]
    assert await audit.append(batch) == []
    # Partly seen batch: only the new one is written, duplicates in the batch collapse.
    again = entries(2, start=5) + entries(1, start=6)
    assert await audit.append(again) == [6]
    # Same event, another action: a separate fact.
    other = AuditEntry(THERAPIST, "message.redacted", ROOM_A, "$e1", PATIENT)
    assert await audit.append([other, other]) == [7]
    # No event ID: never deduplicated.
    started = AuditEntry("system", "bot.started")
    assert await audit.append([started, started]) == [8, 9]
    assert await audit.exists("$e1", "message.sent")
    assert await audit.exists("$e1", "message.redacted")
    assert not await audit.exists("$e1", "member.joined")
    assert len(await all_rows(db)) == 9
    assert (await audit.verify()).ok


async def test_details_roundtrip_through_jsonb(audit: AuditLog) -> None:
    # jsonb rewrites numbers (1e16 comes back as an integer, -0.0 as 0); the chain must hold.
    details = {"big": 1e16, "neg_zero": -0.0, "small": 1.5e-7, "text": "ünï\U0001f600", "n": None}
    await audit.append([AuditEntry("system", "policy.changed", details=details)])
    assert (await audit.verify()).ok


async def test_unserializable_details_fail_before_writing(audit: AuditLog, db: Database) -> None:
    with pytest.raises(TypeError):
        await audit.append([AuditEntry("system", "bot.started", details={"x": object()})])
    assert await all_rows(db) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET details = '{\"i\": 0}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
        "UPDATE audit_log SET hash = hash",
        "DELETE FROM audit_log",
    ],
)
async def test_history_cannot_be_changed(audit: AuditLog, db: Database, statement: str) -> None:
    await audit.append(entries(3))
    before = await all_rows(db)
    with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
        await db.execute(statement)
    assert await all_rows(db) == before


async def test_superuser_tampering_via_replication_role(
    audit: AuditLog, db: Database, db_url: str
) -> None:
    await audit.append(entries(30))
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "UPDATE audit_log SET details = details || '{\"i\": 999}' WHERE seq = 17"
        )
    finally:
        await conn.close()
    result = await audit.verify()
    assert (result.ok, result.rows, result.first_broken_seq) == (False, 30, 17)


async def test_owner_tampering_via_disabled_trigger(
    audit: AuditLog, db: Database, db_url: str
) -> None:
    await audit.append(entries(30))
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
        await conn.execute("DELETE FROM audit_log WHERE seq = 17")
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
    finally:
        await conn.close()
    result = await audit.verify()
    assert (result.ok, result.rows, result.first_broken_seq) == (False, 29, 18)


async def test_concurrent_appenders_keep_one_chain(audit: AuditLog, db: Database) -> None:
    sync_state = SyncState(db)

    async def plain(worker: int) -> None:
        for batch in range(5):
            await audit.append(
                [AuditEntry("system", "bot.started", details={"w": worker, "b": batch})] * 3
            )

    async def in_outer_transaction(worker: int) -> None:
        # The sync-loop shape: the chain lock must be held until the outer commit.
        for batch in range(5):
            async with transaction(db):
                await audit.append(entries(4, start=worker * 1000 + batch * 10))
                await asyncio.sleep(0.01)
                await sync_state.save(f"acct{worker}", f"s{batch}")

    await asyncio.gather(*[plain(w) for w in range(3)], *[in_outer_transaction(w) for w in (7, 8)])
    result = await audit.verify()
    assert (result.ok, result.rows) == (True, 3 * 5 * 3 + 2 * 5 * 4)
    seqs = [r["seq"] for r in await all_rows(db)]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_audit_and_sync_position_commit_together(audit: AuditLog, db: Database) -> None:
    sync_state = SyncState(db)
    async with transaction(db):
        await audit.append(entries(2))
        await sync_state.save("bot", "s1")
    assert await sync_state.get("bot") == "s1"

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with transaction(db):
            await audit.append(entries(2, start=3))
            await sync_state.save("bot", "s2")
            assert await sync_state.get("bot") == "s2"  # visible inside the transaction
            raise Crash
    assert await sync_state.get("bot") == "s1"
    assert len(await all_rows(db)) == 2
    assert not await audit.exists("$e3", "message.sent")
    # The rolled-back rows left no gap: the replay gets the same seqs.
    assert await audit.append(entries(2, start=3)) == [3, 4]
    assert (await audit.verify()).ok


async def test_failed_append_leaves_the_outer_transaction_usable(
    audit: AuditLog, db: Database
) -> None:
    sync_state = SyncState(db)
    async with transaction(db):
        with pytest.raises(TypeError):
            await audit.append([AuditEntry("system", "x", details={"bad": {1, 2}})])
        await audit.append(entries(1))
        await sync_state.save("bot", "s1")
    assert await sync_state.get("bot") == "s1"
    assert (await audit.verify()).rows == 1


async def test_export_filters(audit: AuditLog, db: Database) -> None:
    first = await audit.append(
        [
            AuditEntry(THERAPIST, "message.sent", ROOM_A, "$1", None),
            AuditEntry("system", "member.kicked", ROOM_A, "$2", PATIENT),
        ]
    )
    await db.execute("SELECT pg_sleep(0.01)")
    second = await audit.append(
        [
            AuditEntry(PATIENT, "message.sent", ROOM_B, "$3", None),
            AuditEntry("system", "bot.started"),
        ]
    )
    await db.execute("SELECT pg_sleep(0.01)")
    third = await audit.append([AuditEntry(THERAPIST, "consent.granted", ROOM_B, "$4", PATIENT)])
    records = {r.seq: r for r in await audit.tail(100)}
    t2 = records[second[0]].ts
    t3 = records[third[0]].ts
    assert records[first[-1]].ts < t2 < t3

    cases = {
        AuditFilter(): first + second + third,
        AuditFilter(room_id=ROOM_A): first,
        AuditFilter(room_id=ROOM_B): [second[0], *third],
        AuditFilter(user=PATIENT): [first[1], second[0], *third],  # actor or subject
        AuditFilter(user=THERAPIST): [first[0], *third],
        AuditFilter(action="message.sent"): [first[0], second[0]],
        AuditFilter(since=t2): second + third,
        AuditFilter(until=t2): first,
        AuditFilter(since=t2, until=t3): second,
        AuditFilter(since=t2 - timedelta(microseconds=1), until=t3 + timedelta(seconds=1)): (
            second + third
        ),
        AuditFilter(room_id=ROOM_B, user=PATIENT, action="consent.granted", since=t3): third,
        AuditFilter(room_id="!nowhere:x"): [],
    }
    for f, expected in cases.items():
        assert [r.seq for r in await collect(audit, f)] == expected, f
    assert await collect(audit, AuditFilter()) == list(records.values())


async def test_export_streams_and_can_stop_early(audit: AuditLog, db: Database) -> None:
    await audit.append(entries(1200))
    async with aclosing(audit.export(AuditFilter(room_id=ROOM_A))) as stream:
        seen = []
        async for record in stream:
            seen.append(record.seq)
            if len(seen) == 700:
                break
    assert seen == list(range(1, 701))
    # The connection went back to the pool and the database is still usable.
    assert await audit.exists("$e1", "message.sent")


async def test_export_inside_a_transaction_sees_its_rows(audit: AuditLog, db: Database) -> None:
    async with transaction(db):
        await audit.append(entries(2))
        assert [r.seq async for r in audit.export(AuditFilter())] == [1, 2]
        assert (await audit.verify()).rows == 2


async def test_tail(audit: AuditLog) -> None:
    await audit.append(entries(5))
    await audit.append([AuditEntry("system", "room.joined", ROOM_B)])
    assert [r.seq for r in await audit.tail(3)] == [4, 5, 6]
    assert [r.seq for r in await audit.tail(2, room_id=ROOM_A)] == [4, 5]
    assert [r.seq for r in await audit.tail(5, room_id=ROOM_B)] == [6]
