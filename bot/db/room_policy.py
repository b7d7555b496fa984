"""Per-room policy overrides (`room_policy`); fields not set fall back to `defaults.*`."""

from __future__ import annotations

from typing import Any

from mautrix.util.async_db import Database

from bot.policy.room_policy import RoomPolicy

_COLUMNS = {
    "consent": "consent",
    "enforcement": "enforcement",
    "retention": "retention_seconds",
    "legal_hold": "legal_hold",
    "require_encryption": "require_encryption",
}


class RoomPolicyRepo:
    def __init__(self, db: Database, defaults: RoomPolicy) -> None:
        self.db = db
        self.defaults = defaults

    async def get(self, room_id: str) -> RoomPolicy:
        row = await self.db.fetchrow(
            "SELECT consent, enforcement, retention_set, retention_seconds, legal_hold,"
            " require_encryption FROM room_policy WHERE room_id = $1",
            room_id,
        )
        policy = self.defaults
        if row is None:
            return policy
        for field, column in _COLUMNS.items():
            if field == "retention":
                if row["retention_set"]:
                    policy = policy.with_value("retention", row["retention_seconds"])
            elif row[column] is not None:
                policy = policy.with_value(field, row[column])
        return policy

    async def set(self, room_id: str, field: str, value: Any, actor: str) -> None:
        column = _COLUMNS[field]  # KeyError for an unknown field: a bug, not user input
        extra = ", retention_set = true" if field == "retention" else ""
        await self.db.execute(
            f"INSERT INTO room_policy (room_id, {column}, updated_by, updated_at"  # noqa: S608
            f"{', retention_set' if field == 'retention' else ''}) "
            f"VALUES ($1, $2, $3, now(){', true' if field == 'retention' else ''}) "
            f"ON CONFLICT (room_id) DO UPDATE SET {column} = excluded.{column}, "
            f"updated_by = excluded.updated_by, updated_at = now(){extra}",
            room_id,
            value,
            actor,
        )

    async def rooms_with(self, field: str, value: Any) -> list[str]:
        column = _COLUMNS[field]
        rows = await self.db.fetch(
            f"SELECT room_id FROM room_policy WHERE {column} = $1",  # noqa: S608
            value,
        )
        return [r["room_id"] for r in rows]
