"""Retention repositories against a real Postgres: tracked events, the archive, room state."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from mautrix.util.async_db import Database

from bot.db.archive import ArchiveFilter, MessageArchive
from bot.db.retention_rooms import RetentionRooms
from bot.db.tracked_events import TrackedEvents
from bot.policy.retention import (
    TrackedEvent,
    cutoff_ms,
    due_events,
    retry_failed_before_ms,
    summarize,
    to_ms,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ROOM = "!room:x"


def event(i: int, ts: int, **kw: object) -> TrackedEvent:
    fields: dict[str, object] = {
        "event_id": f"$e{i}",
        "room_id": ROOM,
        "sender": "@p:x",
        "event_type": "m.room.message",
        "is_state": False,
        "origin_ts": ts,
        **kw,
    }
    return TrackedEvent(**fields)  # type: ignore[arg-type]


async def test_recording_is_idempotent_and_learns_the_decrypted_type(db: Database) -> None:
    repo = TrackedEvents(db)
    encrypted = event(1, 1000, event_type="m.room.encrypted")
    await repo.record([encrypted])
    await repo.record([encrypted])  # a replayed batch
    await repo.record([event(1, 1000, event_type="m.room.message")])  # decrypted later
    got = await repo.get("$e1")
    assert got is not None and got.event_type == "m.room.message"
    await repo.record([event(1, 1000, event_type="m.room.encrypted")])  # seen encrypted again
    assert (await repo.get("$e1")).event_type == "m.room.message"  # type: ignore[union-attr]
    await repo.record([event(1, 1000, redacted=True)])
    assert (await repo.get("$e1")).redacted  # type: ignore[union-attr]
    assert await db.fetchval("SELECT count(*) FROM tracked_events") == 1


async def test_the_due_query_agrees_with_the_pure_decision(db: Database) -> None:
    repo = TrackedEvents(db)
    rng = random.Random(7)
    now_ms = to_ms(NOW)
    events = []
    for i in range(300):
        events.append(
            event(
                i,
                now_ms - rng.randint(0, 3 * 86_400_000),
                event_type=rng.choice(["m.room.message", "m.room.encrypted", "m.room.redaction"]),
                is_state=rng.random() < 0.1,
                redacted=rng.random() < 0.1,
                room_id=rng.choice([ROOM, "!other:x"]),
            )
        )
    await repo.record(events)
    for retention, hold in ((86_400, False), (3600, False), (2 * 86_400, True)):
        cutoff = cutoff_ms(NOW, retention_seconds=retention, minimum_seconds=1, legal_hold=hold)
        expected = due_events(
            [e for e in events if e.room_id == ROOM],
            now=NOW,
            retention_seconds=retention,
            minimum_seconds=1,
            legal_hold=hold,
        )
        if cutoff is None:
            assert expected == []
            continue
        retry = retry_failed_before_ms(NOW)
        got = await repo.due(ROOM, cutoff, retry, 10_000)
        assert [e.event_id for e in got] == [e.event_id for e in expected]
        assert await repo.preview(ROOM, cutoff, retry) == summarize(expected)
        page = await repo.due(ROOM, cutoff, retry, 5)
        assert [e.event_id for e in page] == [e.event_id for e in expected[:5]]


async def test_removal_state_makes_the_sweep_resumable(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record([event(i, 1000 + i) for i in range(4)])
    cutoff, retry = 10_000, retry_failed_before_ms(NOW)
    await repo.mark_removing(["$e0", "$e1"])
    assert await repo.in_flight(ROOM) == ["$e0", "$e1"]
    assert await repo.mark_removed("$e0", "$redaction0") is True
    assert await repo.mark_removed("$e0", "$redaction0") is False  # recorded once only
    await repo.mark_redacted("$e1")  # e.g. the redaction arrived through sync
    assert await repo.in_flight(ROOM) == []
    await repo.mark_failed("$e2", "forbidden", NOW)
    assert [e.event_id for e in await repo.due(ROOM, cutoff, retry, 10)] == ["$e3"]
    later = retry_failed_before_ms(NOW + timedelta(days=1, seconds=1))
    assert [e.event_id for e in await repo.due(ROOM, cutoff, later, 10)] == ["$e2", "$e3"]
    await repo.mark_archived("$e3")
    assert (await repo.get("$e3")).archived  # type: ignore[union-attr]
    removed = "SELECT count(*) FROM tracked_events WHERE removed_at IS NOT NULL AND room_id = $1"
    assert await db.fetchval(removed, ROOM) == 1
    assert await repo.first_at_or_after(ROOM, 1002) == "$e2"


@pytest.mark.parametrize(
    "failed_at", [datetime(2001, 1, 1, tzinfo=UTC), datetime(2090, 1, 1, tzinfo=UTC)]
)
async def test_a_refused_removal_is_retried_by_the_bots_clock_not_the_databases(
    db: Database, failed_at: datetime
) -> None:
    """The failure stamp meets the bot's clock in the retry decision: stamped with the
    database's clock instead, one of these far-off clocks would retry at once or never."""
    repo = TrackedEvents(db)
    await repo.record([event(2, 1000)])
    await repo.mark_failed("$e2", "forbidden", failed_at)
    stored = await repo.get("$e2")
    assert stored is not None and stored.failed_at == to_ms(failed_at)
    an_hour_later = retry_failed_before_ms(failed_at + timedelta(hours=1))
    a_day_later = retry_failed_before_ms(failed_at + timedelta(days=1, seconds=1))
    assert await repo.due(ROOM, 10_000, an_hour_later, 10) == []
    retried = await repo.due(ROOM, 10_000, a_day_later, 10)
    assert [e.event_id for e in retried] == ["$e2"]


async def test_archive_keeps_one_sealed_copy_that_can_never_change(db: Database) -> None:
    archive = MessageArchive(db)
    args = {"room_id": ROOM, "sender": "@p:x", "key_id": "k" * 16}
    assert await archive.store(event_id="$a", origin_ts=5, sealed=b"s1", **args)
    assert not await archive.store(event_id="$a", origin_ts=5, sealed=b"s2", **args)
    await archive.store(event_id="$b", origin_ts=9, sealed=b"s3", **{**args, "sender": "@q:x"})
    rows = [r async for r in archive.rows(ArchiveFilter())]
    assert [(r.event_id, r.sealed) for r in rows] == [("$a", b"s1"), ("$b", b"s3")]
    assert [r.event_id async for r in archive.rows(ArchiveFilter(sender="@q:x"))] == ["$b"]
    assert [r.event_id async for r in archive.rows(ArchiveFilter(since_ms=6))] == ["$b"]
    assert [r.event_id async for r in archive.rows(ArchiveFilter(until_ms=6))] == ["$a"]
    for sql in ("UPDATE message_archive SET sealed = 'x'", "DELETE FROM message_archive"):
        with pytest.raises(asyncpg.RaiseError, match="kept clinical record"):
            await db.execute(sql)
    assert await archive.count(ROOM) == 2


async def test_archive_pages_through_many_rows(db: Database) -> None:
    archive = MessageArchive(db)
    for i in range(1203):
        await archive.store(
            event_id=f"$m{i:05}", room_id=ROOM, sender="@p:x", origin_ts=i % 7, key_id="k",
            sealed=b"x",
        )  # fmt: skip
    ids = [r.event_id async for r in archive.rows(ArchiveFilter(room_id=ROOM))]
    assert len(ids) == len(set(ids)) == 1203


async def test_room_bookkeeping(db: Database) -> None:
    rooms = RetentionRooms(db)
    assert await rooms.backfills_wanted() == []
    await rooms.request_backfill(ROOM)
    assert await rooms.backfills_wanted() == [ROOM]
    await rooms.backfill_done(ROOM)
    assert await rooms.backfills_wanted() == []
    await rooms.request_backfill(ROOM)  # a retention change asks again
    assert await rooms.backfills_wanted() == [ROOM]
    assert await rooms.announced(ROOM) is None
    await rooms.set_announced(ROOM, 86_400)
    assert await rooms.announced(ROOM) == 86_400
    assert await rooms.published(ROOM) is None
    await rooms.set_published(ROOM, {"max_lifetime": 5})
    assert await rooms.published(ROOM) == {"max_lifetime": 5}
    await rooms.swept(ROOM)
