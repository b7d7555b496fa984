"""Consent records (`consent`): written once, revoked or marked, never deleted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from bot.policy.consent import ConsentRecord

_COLUMNS = (
    "id, room_id, user_id, terms_version, terms_sha256, source, event_id, recorded_by, note,"
    " hours, timezone, topics, max_per_day, granted_at, expires_at, revoked_at, revoked_by,"
    " reasked_at, expiry_recorded_at"
)


@dataclass(frozen=True)
class NewConsent:
    """What a grant stores; the repository assigns the id."""

    room_id: RoomID
    user_id: UserID
    terms_version: str
    terms_sha256: str
    source: str
    event_id: EventID
    recorded_by: UserID
    note: str | None
    hours: str
    timezone: str
    topics: tuple[str, ...]
    max_per_day: int
    granted_at: datetime
    expires_at: datetime


def _record(row: Mapping[str, Any]) -> ConsentRecord:
    return ConsentRecord(
        id=row["id"],
        room_id=RoomID(row["room_id"]),
        user_id=UserID(row["user_id"]),
        terms_version=row["terms_version"],
        terms_sha256=row["terms_sha256"],
        source=row["source"],
        event_id=row["event_id"],
        recorded_by=UserID(row["recorded_by"]),
        note=row["note"],
        hours=row["hours"],
        timezone=row["timezone"],
        topics=tuple(row["topics"]),
        max_per_day=row["max_per_day"],
        granted_at=row["granted_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        reasked_at=row["reasked_at"],
        expiry_recorded_at=row["expiry_recorded_at"],
    )


class ConsentRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def next_id(self) -> int:
        """An id for a consent about to be granted (so its audit row can name it first)."""
        value: int = await self.db.fetchval(
            "SELECT nextval(pg_get_serial_sequence('consent', 'id'))"
        )
        return value

    async def grant(
        self, new: NewConsent, consent_id: int | None = None
    ) -> tuple[ConsentRecord, bool]:
        """Store a consent (with `consent_id` from `next_id`, or a new one); (record, created).
        The same event again returns the stored record, so a command replayed after a crash
        records nothing twice."""
        row = await self.db.fetchrow(
            f"""
            INSERT INTO consent (id, room_id, user_id, terms_version, terms_sha256, source,
                event_id, recorded_by, note, hours, timezone, topics, max_per_day, granted_at,
                expires_at)
            OVERRIDING SYSTEM VALUE
            VALUES (COALESCE($15, nextval(pg_get_serial_sequence('consent', 'id'))),
                $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,  # noqa: S608 (constant column list)
            new.room_id,
            new.user_id,
            new.terms_version,
            new.terms_sha256,
            new.source,
            new.event_id,
            new.recorded_by,
            new.note,
            new.hours,
            new.timezone,
            list(new.topics),
            new.max_per_day,
            new.granted_at,
            new.expires_at,
            consent_id,
        )
        if row is not None:
            return _record(row), True
        existing = await self.by_event(new.event_id)
        assert existing is not None  # the conflict was on this event_id
        return existing, False

    async def by_event(self, event_id: EventID) -> ConsentRecord | None:
        """The consent granted by this event (a command), if it was stored."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM consent WHERE event_id = $1",  # noqa: S608
            event_id,
        )
        return _record(row) if row is not None else None

    async def by_id(self, consent_id: int) -> ConsentRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM consent WHERE id = $1",  # noqa: S608
            consent_id,
        )
        return _record(row) if row is not None else None

    async def current(self, room_id: RoomID, user_id: UserID) -> ConsentRecord | None:
        """The patient's newest consent record in the room (revoked or expired ones too)."""
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM consent WHERE room_id = $1 AND user_id = $2"  # noqa: S608
            " ORDER BY id DESC LIMIT 1",
            room_id,
            user_id,
        )
        return _record(row) if row is not None else None

    async def current_in_room(self, room_id: RoomID) -> list[ConsentRecord]:
        """Each patient's newest record in the room, by user ID."""
        rows = await self.db.fetch(
            f"SELECT DISTINCT ON (user_id) {_COLUMNS} FROM consent"  # noqa: S608
            " WHERE room_id = $1 ORDER BY user_id, id DESC",
            room_id,
        )
        return [_record(r) for r in rows]

    async def open_records(self) -> list[ConsentRecord]:
        """Newest records that are neither revoked nor recorded as expired, for the periodic
        renewal and expiry check."""
        rows = await self.db.fetch(
            f"""
            SELECT {_COLUMNS} FROM (
                SELECT DISTINCT ON (room_id, user_id) * FROM consent
                ORDER BY room_id, user_id, id DESC
            ) newest
            WHERE revoked_at IS NULL AND expiry_recorded_at IS NULL
            ORDER BY expires_at
            """  # noqa: S608
        )
        return [_record(r) for r in rows]

    async def revoke(
        self, consent_id: int, at: datetime, by: UserID, event_id: EventID | None
    ) -> bool:
        """Withdraw a consent; False when it was already revoked."""
        status: str = await self.db.execute(
            "UPDATE consent SET revoked_at = $2, revoked_by = $3, revoke_event_id = $4"
            " WHERE id = $1 AND revoked_at IS NULL",
            consent_id,
            at,
            by,
            event_id,
        )
        return status == "UPDATE 1"

    async def mark_reasked(self, consent_id: int, at: datetime) -> None:
        await self.db.execute(
            "UPDATE consent SET reasked_at = $2 WHERE id = $1 AND reasked_at IS NULL",
            consent_id,
            at,
        )

    async def mark_expiry_recorded(self, consent_id: int, at: datetime) -> bool:
        status: str = await self.db.execute(
            "UPDATE consent SET expiry_recorded_at = $2"
            " WHERE id = $1 AND expiry_recorded_at IS NULL",
            consent_id,
            at,
        )
        return status == "UPDATE 1"
