"""Staff messages each patient received (`consent_contact`), counted for `max_per_day`.

Rows, not counters: each counted message is stored once by event ID, so a replayed batch
cannot count twice, and the count of a day is taken over the patient's local day in whatever
time zone they have agreed to now.
"""

from __future__ import annotations

from datetime import datetime

from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database


class MessageCounts:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        room_id: RoomID,
        patient_id: UserID,
        event_id: EventID,
        sender: UserID,
        sent_at: datetime,
    ) -> None:
        await self.db.execute(
            "INSERT INTO consent_contact (room_id, patient_id, event_id, sender, sent_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            room_id,
            patient_id,
            event_id,
            sender,
            sent_at,
        )

    async def event_ids(
        self, room_id: RoomID, patient_id: UserID, start: datetime, end: datetime
    ) -> set[EventID]:
        """Event IDs counted for the patient in [start, end)."""
        rows = await self.db.fetch(
            "SELECT event_id FROM consent_contact WHERE room_id = $1 AND patient_id = $2"
            " AND sent_at >= $3 AND sent_at < $4",
            room_id,
            patient_id,
            start,
            end,
        )
        return {EventID(r["event_id"]) for r in rows}
