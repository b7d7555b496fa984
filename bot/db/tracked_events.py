"""Metadata of every event the bot has seen (`tracked_events`), and each one's removal state.

Never content: the table has no column for it. Writes are idempotent, so a replayed sync
batch or a second back-fill of the same history changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from bot.policy.retention import EXEMPT_TYPES, Preview, TrackedEvent

_COLUMNS = (
    "event_id, room_id, sender, event_type, is_state, origin_ts, redacted,"
    " removed_at IS NOT NULL AS removed,"
    " (extract(epoch FROM failed_at) * 1000)::bigint AS failed_at,"
    " archived_at IS NOT NULL AS archived"
)
# The due set, the one place its rule is written: a message-like event (not state, not an
# EXEMPT_TYPES one) whose content is still there (neither redacted nor removed), stamped strictly
# before the cutoff $3, either never refused or last refused before $4. Both bounds come from
# bot.policy.retention: $3 = cutoff_ms (the room's retention, never below `retention.minimum`,
# back from now), $4 = retry_failed_before_ms (a day back); a sweep fixes both when it starts.
_DUE = """
    room_id = $1 AND removed_at IS NULL AND NOT redacted AND NOT is_state
    AND event_type <> ALL($2::text[]) AND origin_ts < $3
    AND (failed_at IS NULL OR failed_at < to_timestamp($4 / 1000.0))
"""


def _event(row: Mapping[str, Any]) -> TrackedEvent:
    return TrackedEvent(
        event_id=EventID(row["event_id"]),
        room_id=RoomID(row["room_id"]),
        sender=UserID(row["sender"]),
        event_type=row["event_type"],
        is_state=row["is_state"],
        origin_ts=row["origin_ts"],
        redacted=row["redacted"],
        removed=row["removed"],
        failed_at=row["failed_at"],
        archived=row["archived"],
    )


def _merged(events: Sequence[TrackedEvent]) -> list[TrackedEvent]:
    """One row per event ID (an encrypted event is seen twice: as received and decrypted),
    merged the way the upsert merges with what is stored."""
    merged: dict[EventID, TrackedEvent] = {}
    for event in events:
        seen = merged.get(event.event_id)
        if seen is not None:
            kind = event.event_type if seen.event_type == "m.room.encrypted" else seen.event_type
            event = replace(seen, event_type=kind, redacted=seen.redacted or event.redacted)
        merged[event.event_id] = event
    # In key order, so concurrent upserts lock shared rows in the same order.
    return [merged[key] for key in sorted(merged)]


class TrackedEvents:
    """The `tracked_events` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, events: Sequence[TrackedEvent]) -> None:
        """Insert what is new; an encrypted event seen decrypted later gets its real type."""
        events = _merged(events)
        if not events:
            return
        await self.db.execute(
            """
            INSERT INTO tracked_events
                (event_id, room_id, sender, event_type, is_state, origin_ts, redacted)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                 $5::boolean[], $6::bigint[], $7::boolean[])
            ON CONFLICT (event_id) DO UPDATE SET
                event_type = CASE WHEN tracked_events.event_type = 'm.room.encrypted'
                                  THEN excluded.event_type ELSE tracked_events.event_type END,
                redacted = tracked_events.redacted OR excluded.redacted
            """,
            [e.event_id for e in events],
            [e.room_id for e in events],
            [e.sender for e in events],
            [e.event_type for e in events],
            [e.is_state for e in events],
            [e.origin_ts for e in events],
            [e.redacted for e in events],
        )

    async def get(self, event_id: EventID) -> TrackedEvent | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM tracked_events WHERE event_id = $1",  # noqa: S608
            event_id,
        )
        return _event(row) if row else None

    async def due(
        self, room_id: RoomID, cutoff: int, retry_failed_before: int, limit: int
    ) -> list[TrackedEvent]:
        """The oldest `limit` events of the room that the next sweep removes."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM tracked_events WHERE {_DUE}"  # noqa: S608
            " ORDER BY origin_ts, event_id LIMIT $5",
            room_id,
            list(EXEMPT_TYPES),
            cutoff,
            retry_failed_before,
            limit,
        )
        return [_event(r) for r in rows]

    async def preview(self, room_id: RoomID, cutoff: int, retry_failed_before: int) -> Preview:
        row = await self.db.fetchrow(
            "SELECT count(*) AS n, min(origin_ts) AS oldest, max(origin_ts) AS newest"  # noqa: S608
            f" FROM tracked_events WHERE {_DUE}",
            room_id,
            list(EXEMPT_TYPES),
            cutoff,
            retry_failed_before,
        )
        assert row is not None
        return Preview(row["n"], row["oldest"], row["newest"])

    async def in_flight(self, room_id: RoomID) -> list[EventID]:
        """Events whose removal was requested but not recorded (the bot stopped in between)."""
        rows = await self.db.fetch(
            "SELECT event_id FROM tracked_events WHERE room_id = $1"
            " AND removing_since IS NOT NULL AND removed_at IS NULL AND NOT redacted"
            " ORDER BY origin_ts",
            room_id,
        )
        return [EventID(r["event_id"]) for r in rows]

    async def mark_archived(self, event_id: EventID) -> None:
        await self.db.execute(
            "UPDATE tracked_events SET archived_at = COALESCE(archived_at, now())"
            " WHERE event_id = $1",
            event_id,
        )

    async def mark_removing(self, event_ids: Sequence[EventID]) -> None:
        await self.db.execute(
            "UPDATE tracked_events SET removing_since = COALESCE(removing_since, now())"
            " WHERE event_id = ANY($1::text[])",
            list(event_ids),
        )

    async def mark_removed(self, event_id: EventID, removal_id: str | None) -> bool:
        """Record a removal; False when it was already recorded (so audit it only once)."""
        status: str = await self.db.execute(
            "UPDATE tracked_events SET removed_at = now(), removal_id = $2, failed_at = NULL,"
            " failure = NULL WHERE event_id = $1 AND removed_at IS NULL",
            event_id,
            removal_id,
        )
        return status == "UPDATE 1"

    async def mark_redacted(self, event_id: EventID) -> None:
        """Someone (or something) else redacted it: there is nothing left to remove."""
        await self.db.execute(
            "UPDATE tracked_events SET redacted = true WHERE event_id = $1", event_id
        )

    async def mark_failed(self, event_id: EventID, failure: str, at: datetime) -> None:
        """A final refusal at `at` (the bot's clock: the retry decision compares it with that
        clock, so it must not come from the database's)."""
        await self.db.execute(
            "UPDATE tracked_events SET failed_at = $3, failure = $2, removing_since = NULL"
            " WHERE event_id = $1",
            event_id,
            failure,
            at,
        )

    async def oldest_in_room(self, room_id: RoomID) -> int | None:
        ts: int | None = await self.db.fetchval(
            "SELECT min(origin_ts) FROM tracked_events WHERE room_id = $1", room_id
        )
        return ts

    async def first_at_or_after(self, room_id: RoomID, ts: int) -> EventID | None:
        """The earliest event of the room stamped at or after `ts` (a purge keeps it)."""
        event_id: EventID | None = await self.db.fetchval(
            "SELECT event_id FROM tracked_events WHERE room_id = $1 AND origin_ts >= $2"
            " ORDER BY origin_ts, event_id LIMIT 1",
            room_id,
            ts,
        )
        return event_id
