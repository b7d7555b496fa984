"""Per-room policy overrides (`room_policy`); fields not set fall back to `defaults.*`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from asyncpg import Record
from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database

from bot.policy.room_policy import POLICY_FIELDS, RoomPolicy

# Each field's column is named like its RoomPolicy attribute.
_SELECT = ", ".join(
    column
    for spec in POLICY_FIELDS.values()
    for column in (spec.attribute, spec.set_column)
    if column
)


class RoomPolicyRepo:
    def __init__(self, db: Database, defaults: RoomPolicy) -> None:
        self.db = db
        self.defaults = defaults

    async def get(self, room_id: RoomID) -> RoomPolicy:
        row = await self.db.fetchrow(
            f"SELECT {_SELECT} FROM room_policy WHERE room_id = $1",  # noqa: S608
            room_id,
        )
        return self._with_defaults(row)

    async def get_many(self, room_ids: Collection[RoomID]) -> dict[RoomID, RoomPolicy]:
        """Each room's policy, in one query."""
        rows = await self.db.fetch(
            f"SELECT room_id, {_SELECT} FROM room_policy WHERE room_id = ANY($1::text[])",  # noqa: S608
            list(room_ids),
        )
        found = {RoomID(row["room_id"]): row for row in rows}
        return {room_id: self._with_defaults(found.get(room_id)) for room_id in room_ids}

    def _with_defaults(self, row: Record | None) -> RoomPolicy:
        if row is None:
            return self.defaults
        overrides = {
            spec.attribute: row[spec.attribute]
            for spec in POLICY_FIELDS.values()
            if (row[spec.set_column] if spec.set_column else row[spec.attribute] is not None)
        }
        return replace(self.defaults, **overrides)

    async def set(self, room_id: RoomID, field: str, value: Any, actor: UserID) -> None:
        spec = POLICY_FIELDS[field]  # KeyError for an unknown field: a bug, not user input
        columns = [spec.attribute, *([spec.set_column] if spec.set_column else [])]
        values = ["$2", *(["true"] if spec.set_column else [])]
        updates = ", ".join(f"{column} = excluded.{column}" for column in columns)
        await self.db.execute(
            f"INSERT INTO room_policy (room_id, {', '.join(columns)}, updated_by, updated_at) "  # noqa: S608
            f"VALUES ($1, {', '.join(values)}, $3, now()) "
            f"ON CONFLICT (room_id) DO UPDATE SET {updates}, "
            "updated_by = excluded.updated_by, updated_at = now()",
            room_id,
            value,
            actor,
        )
