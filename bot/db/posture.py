"""The findings of each room's last posture check (`room_posture`)."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from mautrix.types import RoomID
from mautrix.util.async_db import Database

from bot.batch_scope import forget, in_batch, keep, once_per_batch


class PostureRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, room_id: RoomID) -> list[str] | None:
        """Finding codes of the last check, or None if the room was never checked (read once
        per batch: a room's history brings many state events at once)."""

        async def read() -> list[str] | None:
            return _codes(
                await self.db.fetchval(
                    "SELECT findings FROM room_posture WHERE room_id = $1", room_id
                )
            )

        codes = await once_per_batch(("posture", room_id), read)
        return None if codes is None else list(codes)

    async def read_ahead(self, room_ids: Collection[RoomID]) -> None:
        """The last findings of a batch's rooms in one query, kept for the batch."""
        if not in_batch() or not room_ids:
            return
        rows = await self.db.fetch(
            "SELECT room_id, findings FROM room_posture WHERE room_id = ANY($1::text[])",
            list(room_ids),
        )
        found = {row["room_id"]: _codes(row["findings"]) for row in rows}
        for room_id in room_ids:
            keep(("posture", room_id), found.get(room_id))

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


def _codes(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    codes = json.loads(raw) if isinstance(raw, str) else raw
    return [str(code) for code in codes]
