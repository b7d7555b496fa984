"""Sync state, pending decryption, bot identity, rooms and staff against real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from bot.db.identity import BotIdentity, IdentityStore
from bot.db.pending_decryption import PendingDecryption
from bot.db.rooms import RoomsRepo
from bot.db.staff import StaffRepo
from bot.db.sync_state import SyncState

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

ROOM, ROOM_A, ROOM_B, NEVER = RoomID("!r:x"), RoomID("!a:x"), RoomID("!b:x"), RoomID("!never:x")
P, ADMIN, THERAPIST = UserID("@p:x"), UserID("@admin:x"), UserID("@therapist:x")
T1, T2, BOT = UserID("@t1:x"), UserID("@t2:x"), UserID("@chaperone:x")
E1, E2 = EventID("$1"), EventID("$2")


def encrypted(event_id: str, session_id: str = "sess1") -> dict[str, object]:
    return {
        "type": "m.room.encrypted",
        "event_id": event_id,
        "sender": "@patient:clinic.example",
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgAEnAC...",
            "session_id": session_id,
            "device_id": "PATIENTDEV",
        },
    }


async def test_sync_state(db: Database) -> None:
    repo = SyncState(db)
    assert await repo.get("bot") is None
    await repo.save("bot", "s1")
    await repo.save("bot", "s2")
    assert await repo.get("bot") == "s2"
    assert await repo.get("other") is None


async def test_pending_decryption_lifecycle(db: Database) -> None:
    repo = PendingDecryption(db)
    later = NOW + timedelta(minutes=5)
    add = repo.add
    assert await add(E1, ROOM, P, "sess1", "ck", encrypted("$1"), first_seen=NOW, next_attempt=NOW)
    assert not await add(
        E1, ROOM, P, "sess1", "ck", encrypted("$1"), first_seen=NOW, next_attempt=NOW
    )  # replayed sync
    assert await add(
        E2,
        ROOM,
        P,
        "sess2",
        None,
        encrypted("$2", "sess2"),
        first_seen=NOW + timedelta(seconds=1),
        next_attempt=later,
    )
    assert [p.event_id for p in await repo.all()] == ["$1", "$2"]  # oldest first

    assert await repo.reschedule(E1, later + timedelta(minutes=1), 1)
    first, _ = await repo.all()
    assert (first.attempts, first.next_attempt) == (1, later + timedelta(minutes=1))
    assert first.event == encrypted("$1")
    assert first.sender_key == "ck"

    assert await repo.remove(E1)
    assert not await repo.remove(E1)
    assert not await repo.reschedule(E1, later, 2)
    assert [p.event_id for p in await repo.all()] == ["$2"]


async def test_pending_decryption_refuses_plaintext(db: Database) -> None:
    repo = PendingDecryption(db)
    plaintext = {"type": "m.room.message", "content": {"body": "hello"}}
    with pytest.raises(ValueError):
        await repo.add(E1, ROOM, P, "s", None, plaintext, first_seen=NOW, next_attempt=NOW)
    # The schema refuses it too, whoever writes.
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO pending_decryption (event_id, room_id, sender, session_id, event,"
            " first_seen, next_attempt) VALUES ('$1', '!r', '@p', 's', $1, now(), now())",
            '{"type": "m.room.message", "content": {"body": "hello"}}',
        )
    assert await repo.all() == []


async def test_identity(db: Database) -> None:
    repo = IdentityStore(db)
    assert await repo.get("bot") is None
    await repo.save("bot", BOT, "DEVICE1", "tok1")
    assert await repo.get("bot") == (BOT, "DEVICE1", "tok1")
    await repo.save("bot", BOT, "DEVICE1", None)
    assert await repo.get("bot") == BotIdentity(BOT, "DEVICE1", None)


async def test_rooms(db: Database) -> None:
    repo = RoomsRepo(db)
    await repo.joined(ROOM_A, ADMIN)
    await repo.joined(ROOM_B, None)
    assert await repo.managed() == [ROOM_A, ROOM_B]
    assert await repo.left(ROOM_A)
    assert not await repo.left(ROOM_A)
    assert not await repo.left(NEVER)
    assert await repo.managed() == [ROOM_B]
    assert not await repo.is_managed(ROOM_A)
    await repo.joined(ROOM_A, THERAPIST)
    assert set(await repo.managed()) == {ROOM_A, ROOM_B}
    row = await db.fetchrow("SELECT left_at, invited_by FROM rooms WHERE room_id = '!a:x'")
    assert row is not None and (row["left_at"], row["invited_by"]) == (None, THERAPIST)


async def test_staff(db: Database) -> None:
    repo = StaffRepo(db)
    assert await repo.add(T2, ADMIN)
    assert await repo.add(T1, ADMIN)
    assert not await repo.add(T1, ADMIN)
    assert await repo.list() == [T1, T2]
    assert await repo.is_staff(T1)
    assert await repo.remove(T1)
    assert not await repo.remove(T1)
    assert not await repo.is_staff(T1)
    assert await repo.list() == [T2]
