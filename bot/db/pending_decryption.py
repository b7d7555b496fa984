"""Encrypted events waiting for their keys. Only the still-encrypted event is ever stored."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

# The table's withheld_code column (v01) is never written: a withheld key is read from the
# crypto store when the event is retried (bot/service/decryption.py).
_COLUMNS = (
    "event_id, room_id, sender, session_id, sender_key, event, first_seen, attempts, next_attempt"
)
_SELECT = f"SELECT {_COLUMNS} FROM pending_decryption"  # noqa: S608 (constant column list)
ENCRYPTED = "m.room.encrypted"


@dataclass(frozen=True)
class PendingEvent:
    event_id: EventID
    room_id: RoomID
    sender: UserID
    session_id: str
    sender_key: str | None
    event: dict[str, Any]
    """The raw `m.room.encrypted` event as received."""
    first_seen: datetime
    attempts: int
    next_attempt: datetime


def _pending(row: Mapping[str, Any]) -> PendingEvent:
    return PendingEvent(
        event_id=EventID(row["event_id"]),
        room_id=RoomID(row["room_id"]),
        sender=UserID(row["sender"]),
        session_id=row["session_id"],
        sender_key=row["sender_key"],
        event=json.loads(row["event"]),
        first_seen=row["first_seen"],
        attempts=row["attempts"],
        next_attempt=row["next_attempt"],
    )


class PendingDecryption:
    """The `pending_decryption` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        session_id: str,
        sender_key: str | None,
        event: Mapping[str, Any],
        *,
        first_seen: datetime,
        next_attempt: datetime,
    ) -> bool:
        """Queue an undecryptable event; False if it is already queued (a replayed sync)."""
        if event.get("type") != ENCRYPTED:
            raise ValueError(f"only {ENCRYPTED} events may be queued, never plaintext")
        status: str = await self.db.execute(
            """
            INSERT INTO pending_decryption
                (event_id, room_id, sender, session_id, sender_key, event, first_seen,
                 attempts, next_attempt)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)
            ON CONFLICT (event_id) DO NOTHING
            """,
            event_id,
            room_id,
            sender,
            session_id,
            sender_key,
            json.dumps(dict(event)),
            first_seen,
            next_attempt,
        )
        return status == "INSERT 0 1"

    async def reschedule(self, event_id: EventID, next_attempt: datetime, attempts: int) -> bool:
        """Record a failed attempt; False if the event is no longer queued."""
        status: str = await self.db.execute(
            "UPDATE pending_decryption SET next_attempt = $2, attempts = $3 WHERE event_id = $1",
            event_id,
            next_attempt,
            attempts,
        )
        return status == "UPDATE 1"

    async def remove(self, event_id: EventID) -> bool:
        """Drop an event (decrypted, or given up and audited); False if it wasn't queued."""
        status: str = await self.db.execute(
            "DELETE FROM pending_decryption WHERE event_id = $1", event_id
        )
        return status == "DELETE 1"

    async def all(self) -> list[PendingEvent]:
        """Every queued event, oldest first."""
        rows = await self.db.fetch(f"{_SELECT} ORDER BY first_seen, event_id")
        return [_pending(row) for row in rows]
