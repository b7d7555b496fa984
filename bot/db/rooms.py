"""Rooms the bot manages."""

from __future__ import annotations

from collections.abc import Collection

from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database

from bot.batch_scope import forget, in_batch, keep, once_per_batch


class RoomsRepo:
    """The `rooms` table. A room is managed from `joined()` until `left()`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def joined(self, room_id: RoomID, invited_by: UserID | None) -> None:
        """Record that the bot joined `room_id` (again, if it had left)."""
        forget("managed")
        await self.db.execute(
            """
            INSERT INTO rooms (room_id, joined_at, left_at, invited_by)
            VALUES ($1, now(), NULL, $2)
            ON CONFLICT (room_id) DO UPDATE SET
                joined_at = CASE WHEN rooms.left_at IS NULL THEN rooms.joined_at
                                 ELSE excluded.joined_at END,
                left_at = NULL,
                invited_by = COALESCE(excluded.invited_by, rooms.invited_by)
            """,
            room_id,
            invited_by,
        )

    async def left(self, room_id: RoomID) -> bool:
        """Record that the bot left `room_id`; False if it wasn't managed."""
        forget("managed")
        status: str = await self.db.execute(
            "UPDATE rooms SET left_at = now() WHERE room_id = $1 AND left_at IS NULL", room_id
        )
        return status == "UPDATE 1"

    async def managed(self) -> list[RoomID]:
        """IDs of the rooms the bot is in, in join order."""
        rows = await self.db.fetch(
            "SELECT room_id FROM rooms WHERE left_at IS NULL ORDER BY joined_at, room_id"
        )
        return [RoomID(row["room_id"]) for row in rows]

    async def is_managed(self, room_id: RoomID) -> bool:
        async def read() -> bool:
            found: bool = await self.db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM rooms WHERE room_id = $1 AND left_at IS NULL)",
                room_id,
            )
            return found

        return await once_per_batch(("managed", room_id), read)

    async def read_ahead(self, room_ids: Collection[RoomID]) -> None:
        """Whether each of a batch's rooms is managed, in one query, kept for the batch."""
        if not in_batch() or not room_ids:
            return
        rows = await self.db.fetch(
            "SELECT room_id FROM rooms WHERE room_id = ANY($1::text[]) AND left_at IS NULL",
            list(room_ids),
        )
        managed = {row["room_id"] for row in rows}
        for room_id in room_ids:
            keep(("managed", room_id), room_id in managed)
