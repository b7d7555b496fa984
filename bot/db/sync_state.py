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

    async def filter_id(self, account_id: str) -> str | None:
        """The sync filter ID uploaded for this account, if any."""
        value: str | None = await self.db.fetchval(
            "SELECT filter_id FROM sync_state WHERE account_id = $1", account_id
        )
        return value

    async def save(self, account_id: str, next_batch: str, filter_id: str | None = None) -> None:
        """Store the new position (keeping the stored filter ID unless one is given).

        Call it inside the transaction that appends the batch's audit rows.
        """
        await self.db.execute(
            """
            INSERT INTO sync_state (account_id, next_batch, filter_id, updated_at)
            VALUES ($1, $2, $3, now())
            ON CONFLICT (account_id) DO UPDATE SET
                next_batch = excluded.next_batch,
                filter_id = COALESCE(excluded.filter_id, sync_state.filter_id),
                updated_at = excluded.updated_at
            """,
            account_id,
            next_batch,
            filter_id,
        )
