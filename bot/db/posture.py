"""The findings of each room's last posture check (`room_posture`)."""

from __future__ import annotations

import json

from mautrix.types import RoomID
from mautrix.util.async_db import Database

from bot.batch_scope import forget, once_per_batch


class PostureRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, room_id: RoomID) -> list[str] | None:
        """Finding codes of the last check, or None if the room was never checked (read once
        per batch: a room's history brings many state events at once)."""

        async def read() -> list[str] | None:
            raw = await self.db.fetchval(
                "SELECT findings FROM room_posture WHERE room_id = $1", room_id
            )
            if raw is None:
                return None
            codes = json.loads(raw) if isinstance(raw, str) else raw
            return [str(code) for code in codes]

        codes = await once_per_batch(("posture", room_id), read)
        return None if codes is None else list(codes)

    async def save(self, room_id: RoomID, codes: list[str]) -> None:
        forget("posture")
        await self.db.execute(
            """
            INSERT INTO room_posture (room_id, findings, checked_at) VALUES ($1, $2::jsonb, now())
            ON CONFLICT (room_id) DO UPDATE SET
                findings = excluded.findings, checked_at = excluded.checked_at
            """,
            room_id,
            json.dumps(codes),
        )
