"""Consent records, per-day message counts and notice times against a real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from bot.db.consent import ConsentRepo, NewConsent
from bot.db.consent_notices import ConsentNotices
from bot.db.message_counts import MessageCounts
from bot.policy.consent import terms_sha256
from bot.policy.hours import day_bounds, parse_timezone

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

ROOM, ROOM_S, OTHER_ROOM = RoomID("!r:x"), RoomID("!s:x"), RoomID("!other:x")
P, Q, S, OTHER = UserID("@p:x"), UserID("@q:x"), UserID("@s:x"), UserID("@other:x")


def new(
    event_id: str = "$a", user: UserID = P, room: RoomID = ROOM, **changes: object
) -> NewConsent:
    values: dict[str, object] = {
        "room_id": room,
        "user_id": user,
        "terms_version": "1",
        "terms_sha256": terms_sha256("the terms"),
        "source": "message",
        "event_id": event_id,
        "recorded_by": user,
        "note": None,
        "hours": "Mon-Fri 09:00-17:00",
        "timezone": "America/New_York",
        "topics": ("scheduling", "billing"),
        "max_per_day": 5,
        "granted_at": T0,
        "expires_at": T0 + timedelta(days=365),
    }
    values.update(changes)
    return NewConsent(**values)  # type: ignore[arg-type]


async def stored_ids(db: Database, room_id: str, user_id: str) -> list[int]:
    """Every consent record of one patient in one room, oldest first."""
    rows = await db.fetch(
        "SELECT id FROM consent WHERE room_id = $1 AND user_id = $2 ORDER BY id", room_id, user_id
    )
    return [int(r["id"]) for r in rows]


async def test_grant_stores_everything_and_is_idempotent_per_event(db: Database) -> None:
    repo = ConsentRepo(db)
    record, created = await repo.grant(new())
    assert created
    assert record.terms_sha256 == terms_sha256("the terms")
    assert record.topics == ("scheduling", "billing")
    assert (record.granted_at, record.expires_at) == (T0, T0 + timedelta(days=365))
    again, created = await repo.grant(new(max_per_day=9))  # same event: a replay
    assert not created and again == record
    assert await repo.current(ROOM, P) == record
    assert await repo.current(ROOM, OTHER) is None


async def test_newest_record_is_current_and_history_keeps_all(db: Database) -> None:
    repo = ConsentRepo(db)
    first, _ = await repo.grant(new("$1"))
    second, _ = await repo.grant(new("$2", max_per_day=2))
    other, _ = await repo.grant(new("$3", user=Q))
    elsewhere, _ = await repo.grant(new("$4", room=ROOM_S))
    assert await repo.current(ROOM, P) == second
    assert await stored_ids(db, ROOM, P) == [first.id, second.id]
    assert await repo.current_in_room(ROOM) == [second, other]
    assert {r.id for r in await repo.open_records()} == {second.id, other.id, elsewhere.id}


async def test_revoke_once_and_revoked_leave_the_open_list(db: Database) -> None:
    repo = ConsentRepo(db)
    record, _ = await repo.grant(new())
    assert await repo.revoke(record.id, T0 + timedelta(hours=1), P, EventID("$revoke"))
    assert not await repo.revoke(record.id, T0 + timedelta(hours=2), P, EventID("$again"))
    current = await repo.current(ROOM, P)
    assert current is not None
    assert (current.revoked_at, current.revoked_by) == (T0 + timedelta(hours=1), P)
    assert await repo.open_records() == []


async def test_marks_are_set_once(db: Database) -> None:
    repo = ConsentRepo(db)
    record, _ = await repo.grant(new())
    await repo.mark_reasked(record.id, T0)
    await repo.mark_reasked(record.id, T0 + timedelta(days=1))
    assert await repo.mark_expiry_recorded(record.id, T0 + timedelta(days=2))
    assert not await repo.mark_expiry_recorded(record.id, T0 + timedelta(days=3))
    current = await repo.current(ROOM, P)
    assert current is not None
    assert current.reasked_at == T0
    assert current.expiry_recorded_at == T0 + timedelta(days=2)
    assert await repo.open_records() == []


async def test_offline_record_needs_a_note(db: Database) -> None:
    repo = ConsentRepo(db)
    with pytest.raises(asyncpg.CheckViolationError):
        await repo.grant(new(source="offline", recorded_by="@staff:x"))
    record, _ = await repo.grant(new(source="offline", recorded_by="@staff:x", note="paper form"))
    assert (record.source, record.recorded_by, record.note) == (
        "offline",
        "@staff:x",
        "paper form",
    )


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("DELETE FROM consent", "never removed"),
        ("TRUNCATE consent", "never removed"),
        ("UPDATE consent SET max_per_day = 50", "never changed"),
        ("UPDATE consent SET hours = 'daily 00:00-24:00'", "never changed"),
        ("UPDATE consent SET terms_sha256 = repeat('0', 64)", "never changed"),
        ("UPDATE consent SET expires_at = expires_at + interval '1 year'", "never changed"),
        ("UPDATE consent SET revoked_at = NULL, revoked_by = NULL", "never changed"),
    ],
)
async def test_the_schema_keeps_consent_records(db: Database, statement: str, error: str) -> None:
    repo = ConsentRepo(db)
    record, _ = await repo.grant(new())
    await repo.revoke(record.id, T0, P, EventID("$revoke"))
    with pytest.raises(asyncpg.RaiseError, match=error):
        await db.execute(statement)
    assert await stored_ids(db, ROOM, P) != []


async def test_terms_hash_must_look_like_sha256(db: Database) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await ConsentRepo(db).grant(new(terms_sha256="not-a-hash"))


async def test_message_counts_per_local_day_and_once_per_event(db: Database) -> None:
    counts = MessageCounts(db)
    ny = parse_timezone("America/New_York")
    late_monday = datetime(2026, 3, 3, 4, 30, tzinfo=UTC)  # Mon 23:30 in New York
    early_tuesday = datetime(2026, 3, 3, 5, 30, tzinfo=UTC)  # Tue 00:30
    await counts.add(ROOM, P, EventID("$1"), S, T0)
    await counts.add(ROOM, P, EventID("$1"), S, T0)  # replayed: counted once
    await counts.add(ROOM, P, EventID("$2"), S, late_monday)
    await counts.add(ROOM, P, EventID("$3"), S, early_tuesday)
    await counts.add(ROOM, Q, EventID("$2"), S, late_monday)
    await counts.add(OTHER_ROOM, P, EventID("$4"), S, T0)
    monday = day_bounds(T0, ny)
    assert await counts.event_ids(ROOM, P, *monday) == {"$1", "$2"}
    assert len(await counts.event_ids(ROOM, P, *day_bounds(early_tuesday, ny))) == 1
    # In UTC the same messages fall on other days.
    utc = parse_timezone("UTC")
    assert len(await counts.event_ids(ROOM, P, *day_bounds(T0, utc))) == 1


async def test_notice_times_only_move_forward(db: Database) -> None:
    notices = ConsentNotices(db)
    assert await notices.last(ROOM, P, "violation") is None
    await notices.sent(ROOM, P, "violation", T0)
    await notices.sent(ROOM, P, "violation", T0 - timedelta(minutes=5))
    assert await notices.last(ROOM, P, "violation") == T0
    await notices.sent(ROOM, P, "violation", T0 + timedelta(minutes=5))
    assert await notices.last(ROOM, P, "violation") == T0 + timedelta(minutes=5)
    assert await notices.last(ROOM, P, "after_hours") is None
    with pytest.raises(asyncpg.CheckViolationError):
        await notices.sent(ROOM, P, "gossip", T0)
