"""Retention repositories against a real Postgres: tracked events, the archive, room state.

Which events are due is the query `TrackedEvents.due` (and `preview`), given the bounds the
sweeper computes when a sweep starts: these tests state the rule's outcomes against it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from bot.db.archive import ArchiveFilter, MessageArchive
from bot.db.retention_rooms import RetentionRooms
from bot.db.tracked_events import TrackedEvents
from bot.policy.retention import (
    Preview,
    TrackedEvent,
    cutoff_ms,
    retry_failed_before_ms,
    to_ms,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ROOM = RoomID("!room:x")
P = UserID("@p:x")
DAY = 86_400


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


def eid(i: int) -> EventID:
    """The ID of `event(i, ..)`."""
    return EventID(f"$e{i}")


def aged(i: int, age_ms: int, **kw: object) -> TrackedEvent:
    """Event `$e{i}`, stamped `age_ms` before NOW."""
    return event(i, to_ms(NOW) - age_ms, **kw)


async def due_ids(
    repo: TrackedEvents,
    *,
    now: datetime = NOW,
    retention: int | None = DAY,
    minimum: int = 3600,
    hold: bool = False,
) -> list[str]:
    """What a sweep of ROOM starting at `now` removes: the sweeper's bounds, the due query."""
    cutoff = cutoff_ms(now, retention_seconds=retention, minimum_seconds=minimum, legal_hold=hold)
    if cutoff is None:
        return []
    due = await repo.due(ROOM, cutoff, retry_failed_before_ms(now), 10_000)
    return [e.event_id for e in due]


async def test_recording_is_idempotent_and_learns_the_decrypted_type(db: Database) -> None:
    repo = TrackedEvents(db)
    encrypted = event(1, 1000, event_type="m.room.encrypted")
    await repo.record([encrypted])
    await repo.record([encrypted])  # a replayed batch
    await repo.record([event(1, 1000, event_type="m.room.message")])  # decrypted later
    got = await repo.get(eid(1))
    assert got is not None and got.event_type == "m.room.message"
    await repo.record([event(1, 1000, event_type="m.room.encrypted")])  # seen encrypted again
    assert (await repo.get(eid(1))).event_type == "m.room.message"  # type: ignore[union-attr]
    await repo.record([event(1, 1000, redacted=True)])
    assert (await repo.get(eid(1))).redacted  # type: ignore[union-attr]
    assert await db.fetchval("SELECT count(*) FROM tracked_events") == 1


async def test_due_is_strictly_older_than_the_retention(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record(
        [
            aged(1, DAY * 1000 + 1),  # just older than the retention
            aged(2, DAY * 1000),  # exactly as old: not *older* than it
            aged(3, DAY * 1000 - 1),
            aged(4, 0),
            aged(5, -5000),  # stamped in the future (clock skew): kept
        ]
    )
    assert await due_ids(repo) == ["$e1"]
    # Time passing makes the rest due, oldest first.
    assert await due_ids(repo, now=NOW + timedelta(milliseconds=1)) == ["$e1", "$e2"]
    a_day_on = NOW + timedelta(days=1, seconds=5, milliseconds=1)
    assert await due_ids(repo, now=a_day_on) == ["$e1", "$e2", "$e3", "$e4", "$e5"]


async def test_the_minimum_bounds_how_short_retention_acts(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record(
        [aged(1, 120_000), aged(2, 3_601_000), aged(3, 7_201_000), aged(4, 10 * 365 * DAY * 1000)]
    )
    # Set when the minimum was lower: the minimum still applies.
    assert await due_ids(repo, retention=60, minimum=3600) == ["$e4", "$e3", "$e2"]
    # A longer retention is kept as set.
    assert await due_ids(repo, retention=7200, minimum=3600) == ["$e4", "$e3"]
    assert await due_ids(repo, retention=1, minimum=1) == ["$e4", "$e3", "$e2", "$e1"]
    # Retention off: nothing, however old.
    assert await due_ids(repo, retention=None, minimum=1) == []


async def test_a_legal_hold_suspends_everything(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record([event(i, i) for i in range(5)])  # ancient
    assert await due_ids(repo, hold=True) == []
    assert len(await due_ids(repo, hold=False)) == 5


async def test_only_message_like_events_with_content_left_are_due(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record(
        [
            event(1, 1),
            event(2, 2, event_type="m.room.encrypted"),  # never decrypted: still removed
            event(3, 3, event_type="m.reaction"),
            event(4, 4, event_type="m.room.redaction"),
            event(5, 5, is_state=True, event_type="m.room.member"),
            event(6, 6, redacted=True),
            event(7, 7),
        ]
    )
    assert await repo.mark_removed(eid(7), "$redaction7")
    assert await due_ids(repo) == ["$e1", "$e2", "$e3"]


async def test_a_refused_removal_is_tried_again_only_after_a_day(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record([event(1, 1)])
    await repo.mark_failed(eid(1), "forbidden", NOW)
    assert await due_ids(repo) == []
    assert await due_ids(repo, now=NOW + timedelta(days=1)) == []
    assert await due_ids(repo, now=NOW + timedelta(days=1, milliseconds=1)) == ["$e1"]


async def test_the_due_set_is_the_rooms_events_older_than_the_cutoff_oldest_first(
    db: Database,
) -> None:
    """Many events in two rooms: `due` pages through exactly the room's events stamped before
    the cutoff, oldest first, and `preview` counts them and names the oldest and newest."""
    repo = TrackedEvents(db)
    rng = random.Random(7)
    now_ms = to_ms(NOW)
    events = [
        event(i, now_ms - rng.randint(0, 4 * DAY * 1000), room_id=rng.choice([ROOM, "!other:x"]))
        for i in range(300)
    ]
    await repo.record(events)
    retry = retry_failed_before_ms(NOW)
    for retention in (1, 3600, DAY, 3 * DAY, 5 * DAY):
        cutoff = now_ms - retention * 1000
        expected = sorted(
            (e for e in events if e.room_id == ROOM and e.origin_ts < cutoff),
            key=lambda e: (e.origin_ts, e.event_id),
        )
        got = await repo.due(ROOM, cutoff, retry, 10_000)
        assert [e.event_id for e in got] == [e.event_id for e in expected]
        page = await repo.due(ROOM, cutoff, retry, 5)
        assert [e.event_id for e in page] == [e.event_id for e in expected[:5]]
        summary = (
            Preview(len(expected), expected[0].origin_ts, expected[-1].origin_ts)
            if expected
            else Preview(0)
        )
        assert await repo.preview(ROOM, cutoff, retry) == summary


async def test_removal_state_makes_the_sweep_resumable(db: Database) -> None:
    repo = TrackedEvents(db)
    await repo.record([event(i, 1000 + i) for i in range(4)])
    cutoff, retry = 10_000, retry_failed_before_ms(NOW)
    await repo.mark_removing([eid(0), eid(1)])
    assert await repo.in_flight(ROOM) == ["$e0", "$e1"]
    assert await repo.mark_removed(eid(0), "$redaction0") is True
    assert await repo.mark_removed(eid(0), "$redaction0") is False  # recorded once only
    await repo.mark_redacted(eid(1))  # e.g. the redaction arrived through sync
    assert await repo.in_flight(ROOM) == []
    await repo.mark_failed(eid(2), "forbidden", NOW)
    assert [e.event_id for e in await repo.due(ROOM, cutoff, retry, 10)] == ["$e3"]
    later = retry_failed_before_ms(NOW + timedelta(days=1, seconds=1))
    assert [e.event_id for e in await repo.due(ROOM, cutoff, later, 10)] == ["$e2", "$e3"]
    await repo.mark_archived(eid(3))
    assert (await repo.get(eid(3))).archived  # type: ignore[union-attr]
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
    await repo.mark_failed(eid(2), "forbidden", failed_at)
    stored = await repo.get(eid(2))
    assert stored is not None and stored.failed_at == to_ms(failed_at)
    an_hour_later = retry_failed_before_ms(failed_at + timedelta(hours=1))
    a_day_later = retry_failed_before_ms(failed_at + timedelta(days=1, seconds=1))
    assert await repo.due(ROOM, 10_000, an_hour_later, 10) == []
    retried = await repo.due(ROOM, 10_000, a_day_later, 10)
    assert [e.event_id for e in retried] == ["$e2"]


async def test_archive_keeps_one_sealed_copy_that_can_never_change(db: Database) -> None:
    archive = MessageArchive(db)
    args: dict[str, Any] = {"room_id": ROOM, "sender": P, "key_id": "k" * 16}
    assert await archive.store(event_id=EventID("$a"), origin_ts=5, sealed=b"s1", **args)
    assert not await archive.store(event_id=EventID("$a"), origin_ts=5, sealed=b"s2", **args)
    await archive.store(
        event_id=EventID("$b"), origin_ts=9, sealed=b"s3", **{**args, "sender": UserID("@q:x")}
    )
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
            event_id=EventID(f"$m{i:05}"), room_id=ROOM, sender=P, origin_ts=i % 7, key_id="k",
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
