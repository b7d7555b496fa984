"""The sync position: advanced only in the transaction that commits that batch's audit rows."""

from __future__ import annotations

from mautrix.util.async_db import Database


class SyncState:
    """The `sync_state` table: one row per bot account."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, account_id: str) -> str | None:
        """The last committed `next_batch`, or None before the first sync."""
        token: str | None = await self.db.fetchval(
            "SELECT next_batch FROM sync_state WHERE account_id = $1", account_id
        )
        return token

    async def save(self, account_id: str, next_batch: str) -> None:
        """Store the new position. Call it inside the transaction that appends the batch's
        audit rows. (The table's filter_id column is unused: the gateway keeps the sync filter
        ID in memory.)"""
        await self.db.execute(
            """
            INSERT INTO sync_state (account_id, next_batch, updated_at)
            VALUES ($1, $2, now())
            ON CONFLICT (account_id) DO UPDATE SET
                next_batch = excluded.next_batch,
                updated_at = excluded.updated_at
            """,
            account_id,
            next_batch,
        )
