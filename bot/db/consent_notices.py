"""When the bot last told someone something about consent (`consent_notice`), so that it does
not repeat itself across restarts: violation notices, after-hours notices, posted terms."""

from __future__ import annotations

from datetime import datetime

from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database

KINDS = ("violation", "after_hours", "terms")


class ConsentNotices:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def last(self, room_id: RoomID, user_id: UserID, kind: str) -> datetime | None:
        value: datetime | None = await self.db.fetchval(
            "SELECT sent_at FROM consent_notice WHERE room_id = $1 AND user_id = $2 AND kind = $3",
            room_id,
            user_id,
            kind,
        )
        return value

    async def sent(self, room_id: RoomID, user_id: UserID, kind: str, at: datetime) -> None:
        """Record a notice; an older time never replaces a newer one."""
        await self.db.execute(
            "INSERT INTO consent_notice (room_id, user_id, kind, sent_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (room_id, user_id, kind) DO UPDATE"
            " SET sent_at = GREATEST(consent_notice.sent_at, excluded.sent_at)",
            room_id,
            user_id,
            kind,
            at,
        )
