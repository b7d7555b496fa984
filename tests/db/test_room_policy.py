from __future__ import annotations

from mautrix.util.async_db import Database

from bot.db.room_policy import RoomPolicyRepo
from bot.policy.room_policy import RoomPolicy


async def test_overrides_fall_back_to_defaults_and_off_is_not_unset(dbs) -> None:  # type: ignore[no-untyped-def]
    main: Database = dbs.main
    defaults = RoomPolicy(retention_seconds=86400)
    repo = RoomPolicyRepo(main, defaults)
    assert await repo.get("!a:x") == defaults
    await repo.set("!a:x", "enforcement", "warn", "@admin:x")
    await repo.set("!a:x", "retention", None, "@admin:x")  # explicitly off
    got = await repo.get("!a:x")
    assert got.enforcement == "warn" and got.retention_seconds is None
    assert got.consent == defaults.consent
    await repo.set("!a:x", "legal_hold", True, "@admin:x")
    assert await repo.rooms_with("legal_hold", True) == ["!a:x"]
    assert (await repo.get("!b:x")).retention_seconds == 86400
