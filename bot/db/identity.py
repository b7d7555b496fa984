"""The bot's login, kept so a restart reuses the same device (and its E2EE identity)."""

from __future__ import annotations

from typing import NamedTuple

from mautrix.types import UserID
from mautrix.util.async_db import Database


class BotIdentity(NamedTuple):
    user_id: UserID
    device_id: str
    access_token: str | None


class IdentityStore:
    """The `bot_identity` table: one row per bot account."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, account_id: str) -> BotIdentity | None:
        """(user_id, device_id, access_token), or None before the first login."""
        row = await self.db.fetchrow(
            "SELECT user_id, device_id, access_token FROM bot_identity WHERE account_id = $1",
            account_id,
        )
        if row is None:
            return None
        return BotIdentity(UserID(row["user_id"]), row["device_id"], row["access_token"])

    async def save(
        self, account_id: str, user_id: UserID, device_id: str, access_token: str | None
    ) -> None:
        """Store (or replace) the login for `account_id`."""
        await self.db.execute(
            """
            INSERT INTO bot_identity (account_id, user_id, device_id, access_token)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (account_id) DO UPDATE SET
                user_id = excluded.user_id,
                device_id = excluded.device_id,
                access_token = excluded.access_token
            """,
            account_id,
            user_id,
            device_id,
            access_token,
        )
