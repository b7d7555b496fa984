"""Staff members added by command (on top of those named in the config)."""

from __future__ import annotations

import builtins

from mautrix.types import UserID
from mautrix.util.async_db import Database

from bot.batch_scope import forget, once_per_batch


class StaffRepo:
    """The `staff` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, user_id: UserID, added_by: UserID) -> bool:
        """Add a staff member; False if they already were one."""
        forget("staff")
        status: str = await self.db.execute(
            """
            INSERT INTO staff (user_id, added_by, added_at) VALUES ($1, $2, now())
            ON CONFLICT (user_id) DO NOTHING
            """,
            user_id,
            added_by,
        )
        return status == "INSERT 0 1"

    async def remove(self, user_id: UserID) -> bool:
        """Remove a staff member; False if they weren't one."""
        forget("staff")
        status: str = await self.db.execute("DELETE FROM staff WHERE user_id = $1", user_id)
        return status == "DELETE 1"

    async def is_staff(self, user_id: UserID) -> bool:
        async def read() -> bool:
            found: bool = await self.db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM staff WHERE user_id = $1)", user_id
            )
            return found

        return await once_per_batch(("staff", user_id), read)

    async def list(self) -> builtins.list[UserID]:
        """Every staff member added by command, sorted by user ID."""
        rows = await self.db.fetch("SELECT user_id FROM staff ORDER BY user_id")
        return [UserID(row["user_id"]) for row in rows]
