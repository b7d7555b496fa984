"""The effects outbox (`outbox`): what to do in Matrix because of an event, stored with the
event's audit rows and carried out after the commit."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mautrix.types import RoomID
from mautrix.util.async_db import Database

_COLUMNS = "id, room_id, txn_id, kind, payload, on_done, attempts"


@dataclass(frozen=True)
class QueuedEffect:
    """An effect as written by the flow that decided it."""

    room_id: RoomID
    txn_id: str
    kind: str  # "notice" | "redact"
    payload: Mapping[str, Any]
    """notice: text, mentions and optionally html (the formatted_body); redact: event_id,
    reason."""
    on_done: Sequence[Mapping[str, Any]] = ()
    """Audit rows (as dicts) recorded once the effect is done."""


@dataclass(frozen=True)
class WaitingEffect(QueuedEffect):
    id: int = 0
    attempts: int = 0


def _waiting(row: Mapping[str, Any]) -> WaitingEffect:
    return WaitingEffect(
        id=row["id"],
        room_id=RoomID(row["room_id"]),
        txn_id=row["txn_id"],
        kind=row["kind"],
        payload=json.loads(row["payload"]),
        on_done=json.loads(row["on_done"]),
        attempts=row["attempts"],
    )


class OutboxRepo:
    """The `outbox` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, effects: Sequence[QueuedEffect], at: datetime) -> None:
        """Queue effects; one already queued under the same transaction ID is kept as it is."""
        if not effects:
            return
        await self.db.executemany(
            "INSERT INTO outbox (room_id, txn_id, kind, payload, on_done, created_at)"
            " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) ON CONFLICT (txn_id) DO NOTHING",
            [
                (
                    e.room_id,
                    e.txn_id,
                    e.kind,
                    json.dumps(dict(e.payload)),
                    json.dumps([dict(d) for d in e.on_done]),
                    at,
                )
                for e in effects
            ],
        )

    async def rooms_waiting(self) -> list[RoomID]:
        rows = await self.db.fetch(
            "SELECT DISTINCT room_id FROM outbox WHERE done_at IS NULL AND failed_at IS NULL"
        )
        return [RoomID(r["room_id"]) for r in rows]

    async def next_in(self, room_id: RoomID) -> WaitingEffect | None:
        """The room's oldest effect still to do (a room's effects keep their order)."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM outbox WHERE room_id = $1"  # noqa: S608
            " AND done_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT 1",
            room_id,
        )
        return _waiting(row) if row else None

    async def attempted(self, effect_id: int, error: str) -> None:
        await self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
            effect_id,
            error,
        )

    async def done(self, effect_id: int, result_event: str | None, at: datetime) -> None:
        await self.db.execute(
            "UPDATE outbox SET done_at = $3, result_event = $2 WHERE id = $1",
            effect_id,
            result_event,
            at,
        )

    async def failed(self, effect_id: int, error: str, at: datetime) -> None:
        """A final refusal (e.g. the bot lacks the power): not retried."""
        await self.db.execute(
            "UPDATE outbox SET failed_at = $3, last_error = $2, attempts = attempts + 1"
            " WHERE id = $1",
            effect_id,
            error,
            at,
        )

    async def waiting_count(self) -> int:
        n: int = await self.db.fetchval(
            "SELECT count(*) FROM outbox WHERE done_at IS NULL AND failed_at IS NULL"
        )
        return n
