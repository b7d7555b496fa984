"""What a batch reads once for all its rooms (policy, last posture findings, managed or not)
is what the per-room reads give, and later reads in the batch are answered from it."""

from __future__ import annotations

from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database

from bot.batch_scope import batch_scope
from bot.db.audit import AuditLog
from bot.db.posture import PostureRepo
from bot.db.room_policy import RoomPolicyRepo
from bot.db.rooms import RoomsRepo
from bot.policy.room_policy import RoomPolicy
from bot.service.policy import PolicyService
from tests.service.builder import service_config

SET, UNSET, CHECKED = RoomID("!set:x"), RoomID("!unset:x"), RoomID("!checked:x")
ROOMS = [SET, UNSET, CHECKED]
ADMIN = UserID("@admin:x")


async def test_the_policies_read_ahead_equal_each_rooms_own(db: Database, audit: AuditLog) -> None:
    repo = RoomPolicyRepo(db, RoomPolicy(retention_seconds=86400))
    await repo.set(SET, "enforcement", "warn", ADMIN)
    await repo.set(SET, "retention", None, ADMIN)
    each = {room_id: await repo.get(room_id) for room_id in ROOMS}
    assert await repo.get_many(ROOMS) == each
    assert each[SET] != each[UNSET] == repo.defaults

    policy = PolicyService(service_config(), repo, audit)
    with batch_scope():
        await policy.read_ahead(ROOMS)
        await db.execute("DELETE FROM room_policy")  # behind the memo's back
        assert [await policy.get(room_id) for room_id in ROOMS] == list(each.values())
    assert await policy.get(SET) == repo.defaults  # outside a batch: read as stored


async def test_posture_findings_and_managed_rooms_read_ahead(db: Database) -> None:
    posture, rooms = PostureRepo(db), RoomsRepo(db)
    await posture.save(CHECKED, ["unencrypted"])
    await rooms.joined(CHECKED, ADMIN)
    await rooms.joined(SET, ADMIN)
    await rooms.left(SET)
    with batch_scope():
        await posture.read_ahead(ROOMS)
        await rooms.read_ahead(ROOMS)
        await db.execute("DELETE FROM room_posture")
        await db.execute("DELETE FROM rooms")
        assert [await posture.get(room_id) for room_id in ROOMS] == [None, None, ["unencrypted"]]
        assert [await rooms.is_managed(room_id) for room_id in ROOMS] == [False, False, True]
    assert await posture.get(CHECKED) is None and not await rooms.is_managed(CHECKED)
