"""Per-room retention bookkeeping (`retention_rooms`): announcements, published state,
back-fills asked for and done, last sweep."""

from __future__ import annotations

import json
from typing import Any

from mautrix.types import RoomID
from mautrix.util.async_db import Database


class RetentionRooms:
    """The `retention_rooms` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def request_backfill(self, room_id: RoomID) -> None:
        await self.db.execute(
            "INSERT INTO retention_rooms (room_id, backfill_requested) VALUES ($1, now())"
            " ON CONFLICT (room_id) DO UPDATE SET backfill_requested = now()",
            room_id,
        )

    async def backfills_wanted(self) -> list[RoomID]:
        """Rooms asked for a back-fill since their last one finished, oldest request first."""
        rows = await self.db.fetch(
            "SELECT room_id FROM retention_rooms WHERE backfill_requested IS NOT NULL"
            " AND (backfilled_at IS NULL OR backfilled_at < backfill_requested)"
            " ORDER BY backfill_requested"
        )
        return [RoomID(r["room_id"]) for r in rows]

    async def backfill_done(self, room_id: RoomID) -> None:
        await self.db.execute(
            "UPDATE retention_rooms SET backfilled_at = now() WHERE room_id = $1", room_id
        )

    async def announced(self, room_id: RoomID) -> int | None:
        """The retention (seconds) the room was last told, or None if never."""
        value: int | None = await self.db.fetchval(
            "SELECT announced_retention FROM retention_rooms WHERE room_id = $1", room_id
        )
        return value

    async def set_announced(self, room_id: RoomID, retention_seconds: int) -> None:
        await self.db.execute(
            "INSERT INTO retention_rooms (room_id, announced_retention, announced_at)"
            " VALUES ($1, $2, now()) ON CONFLICT (room_id) DO UPDATE SET"
            " announced_retention = excluded.announced_retention, announced_at = now()",
            room_id,
            retention_seconds,
        )

    async def published(self, room_id: RoomID) -> dict[str, Any] | None:
        """The `m.room.retention` content last published, or None if never."""
        value = await self.db.fetchval(
            "SELECT published_state FROM retention_rooms WHERE room_id = $1", room_id
        )
        if value is None:
            return None
        loaded: dict[str, Any] = json.loads(value) if isinstance(value, str) else dict(value)
        return loaded

    async def set_published(self, room_id: RoomID, content: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO retention_rooms (room_id, published_state) VALUES ($1, $2::jsonb)"
            " ON CONFLICT (room_id) DO UPDATE SET published_state = excluded.published_state",
            room_id,
            json.dumps(content),
        )

    async def swept(self, room_id: RoomID) -> None:
        await self.db.execute(
            "INSERT INTO retention_rooms (room_id, last_swept_at) VALUES ($1, now())"
            " ON CONFLICT (room_id) DO UPDATE SET last_swept_at = now()",
            room_id,
        )
