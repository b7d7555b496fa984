"""Sealed copies of removed messages (`message_archive`). Only sealed bytes and metadata are
stored; rows are never changed or deleted (a trigger refuses both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database


@dataclass(frozen=True)
class SealedRow:
    event_id: EventID
    room_id: RoomID
    sender: UserID
    origin_ts: int
    key_id: str
    sealed: bytes
    archived_at: datetime


@dataclass(frozen=True)
class ArchiveFilter:
    # As an operator typed them (`archive export room=.. user=..`): text to match, not IDs
    # known to be well-formed.
    room_id: str | None = None
    sender: str | None = None
    since_ms: int | None = None  # origin_ts, inclusive
    until_ms: int | None = None  # origin_ts, exclusive


class MessageArchive:
    """The `message_archive` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def store(
        self,
        *,
        event_id: EventID,
        room_id: RoomID,
        sender: UserID,
        origin_ts: int,
        key_id: str,
        sealed: bytes,
    ) -> bool:
        """Keep one sealed copy; False when the event was already archived (kept as it was)."""
        status: str = await self.db.execute(
            "INSERT INTO message_archive (event_id, room_id, sender, origin_ts, key_id, sealed)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            event_id,
            room_id,
            sender,
            origin_ts,
            key_id,
            sealed,
        )
        return status == "INSERT 0 1"

    async def has(self, event_id: EventID) -> bool:
        found: bool = await self.db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM message_archive WHERE event_id = $1)", event_id
        )
        return found

    async def count(self, room_id: RoomID | None = None) -> int:
        n: int = await self.db.fetchval(
            "SELECT count(*) FROM message_archive WHERE ($1::text IS NULL OR room_id = $1)",
            room_id,
        )
        return n

    async def rows(self, where: ArchiveFilter) -> AsyncIterator[SealedRow]:
        """Matching rows in (origin_ts, event_id) order, fetched in pages."""
        after: tuple[int, str] = (-1, "")
        while True:
            page = await self.db.fetch(
                """
                SELECT event_id, room_id, sender, origin_ts, key_id, sealed, archived_at
                FROM message_archive
                WHERE ($1::text IS NULL OR room_id = $1)
                  AND ($2::text IS NULL OR sender = $2)
                  AND ($3::bigint IS NULL OR origin_ts >= $3)
                  AND ($4::bigint IS NULL OR origin_ts < $4)
                  AND (origin_ts, event_id) > ($5, $6)
                ORDER BY origin_ts, event_id LIMIT 500
                """,
                where.room_id,
                where.sender,
                where.since_ms,
                where.until_ms,
                after[0],
                after[1],
            )
            for row in page:
                yield SealedRow(
                    EventID(row["event_id"]),
                    RoomID(row["room_id"]),
                    UserID(row["sender"]),
                    row["origin_ts"],
                    row["key_id"],
                    bytes(row["sealed"]),
                    row["archived_at"],
                )
            if len(page) < 500:
                return
            after = (page[-1]["origin_ts"], page[-1]["event_id"])
