"""Interactive verifications that wait for the operator's comparison (the `verification` table).

The bot writes a row when a flow's short code is ready and records how it ended; the console
(`chaperone verify`) lists the waiting rows and sets the operator's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mautrix.util.async_db import Connection, Database

OPEN = ("waiting", "confirmed")


@dataclass(frozen=True)
class VerificationRow:
    # The IDs are the verification flow's (bot.policy.sas): plain str, as received.
    id: int
    txn: str
    user_id: str
    device_id: str
    transport: str
    room_id: str | None
    emoji: str
    decimals: str
    state: str
    created_at: datetime
    expires_at: datetime
    decided_by: str | None


_COLUMNS = (
    "id, txn, user_id, device_id, transport, room_id, emoji, decimals, state, created_at,"
    " expires_at, decided_by"
)


class VerificationRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        txn: str,
        user_id: str,
        device_id: str,
        room_id: str | None,
        emoji: str,
        decimals: str,
        expires_at: datetime,
    ) -> int:
        """A flow whose short code waits for the operator; returns its ID for the console."""
        row_id: int = await self.db.fetchval(
            """
            INSERT INTO verification
                (txn, user_id, device_id, transport, room_id, emoji, decimals, state, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'waiting', $8)
            RETURNING id
            """,
            txn,
            user_id,
            device_id,
            "room" if room_id else "to_device",
            room_id,
            emoji,
            decimals,
            expires_at,
        )
        return row_id

    async def waiting(self, now: datetime) -> list[VerificationRow]:
        """Rows waiting for the operator at `now` (the caller's clock, which set expires_at),
        oldest first."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM verification WHERE state = 'waiting'"  # noqa: S608 - constant
            " AND expires_at > $1 ORDER BY id",
            now,
        )
        return [VerificationRow(**dict(row)) for row in rows]

    async def decided(self, ids: list[int]) -> list[VerificationRow]:
        """Of these rows, the ones the operator confirmed or rejected and the bot has not
        acted on yet."""
        if not ids:
            return []
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM verification"  # noqa: S608 - a constant column list
            " WHERE id = ANY($1::bigint[]) AND state IN ('confirmed', 'rejected')",
            ids,
        )
        return [VerificationRow(**dict(row)) for row in rows]

    async def decide(
        self, row_id: int, confirmed: bool, operator: str, now: datetime
    ) -> str | None:
        """The operator's decision at `now` on a waiting row; returns the row's state before, or
        None if no such row. Only a waiting row unexpired at `now` changes."""
        conn: Connection
        async with self.db.acquire() as conn, conn.transaction():
            state: str | None = await conn.fetchval(
                "SELECT CASE WHEN state = 'waiting' AND expires_at <= $2 THEN 'expired'"
                " ELSE state END FROM verification WHERE id = $1 FOR UPDATE",
                row_id,
                now,
            )
            if state == "waiting":
                await conn.execute(
                    "UPDATE verification SET state = $2, decided_at = $4, decided_by = $3"
                    " WHERE id = $1",
                    row_id,
                    "confirmed" if confirmed else "rejected",
                    operator,
                    now,
                )
            return state

    async def finish(
        self,
        row_id: int,
        state: str,
        *,
        cancel_code: str | None = None,
        device_key: str | None = None,
        master_key: str | None = None,
    ) -> None:
        await self.db.execute(
            """
            UPDATE verification SET state = $2, finished_at = now(), cancel_code = $3,
                device_key = $4, master_key = $5
            WHERE id = $1
            """,
            row_id,
            state,
            cancel_code,
            device_key,
            master_key,
        )

    async def expire_open(self) -> int:
        """At start: flows of a previous run cannot go on (their keys were in memory)."""
        status: str = await self.db.execute(
            "UPDATE verification SET state = 'expired', finished_at = now()"
            " WHERE state IN ('waiting', 'confirmed', 'rejected')"
        )
        return int(status.split()[-1])

    async def verified_devices(self) -> set[tuple[str, str, str]]:
        """(user, device, ed25519 key) of every device a verification completed with."""
        rows = await self.db.fetch(
            "SELECT user_id, device_id, device_key FROM verification"
            " WHERE state = 'done' AND device_key IS NOT NULL"
        )
        return {(r["user_id"], r["device_id"], r["device_key"]) for r in rows}
