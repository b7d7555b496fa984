from __future__ import annotations

from pathlib import Path

import pytest
from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database

from bot.config import parse_config
from bot.db.room_policy import RoomPolicyRepo
from bot.policy.room_policy import FIELDS, RoomPolicy, parse_policy_value
from bot.service.policy import defaults_from
from tests.unit.test_config import config_with

ROOM_A, ROOM_B = RoomID("!a:x"), RoomID("!b:x")
DEFAULT_ROOM, RESET_ROOM, SET_ROOM = RoomID("!default:x"), RoomID("!reset:x"), RoomID("!set:x")
ADMIN, ACTOR = UserID("@admin:x"), UserID("@a:x")

# A value other than the built-in default, as users write it, for every policy field.
SAMPLES = {
    "consent": "off",
    "enforcement": "warn",
    "retention": "30d",
    "legal_hold": "on",
    "require_encryption": "off",
}


async def test_overrides_fall_back_to_defaults_and_off_is_not_unset(dbs) -> None:  # type: ignore[no-untyped-def]
    main: Database = dbs.main
    defaults = RoomPolicy(retention_seconds=86400)
    repo = RoomPolicyRepo(main, defaults)
    assert await repo.get(ROOM_A) == defaults
    await repo.set(ROOM_A, "enforcement", "warn", ADMIN)
    await repo.set(ROOM_A, "retention", None, ADMIN)  # explicitly off
    got = await repo.get(ROOM_A)
    assert got.enforcement == "warn" and got.retention_seconds is None
    assert got.consent == defaults.consent
    await repo.set(ROOM_A, "legal_hold", True, ADMIN)
    assert (await repo.get(ROOM_A)).legal_hold is True
    assert (await repo.get(ROOM_B)).retention_seconds == 86400


@pytest.mark.parametrize("name", FIELDS)
async def test_each_field_round_trips_config_db_and_listing(dbs, name: str) -> None:  # type: ignore[no-untyped-def]
    main: Database = dbs.main
    sample, built_in = SAMPLES[name], RoomPolicy().value_text(name)
    assert sample != built_in

    def value(text: str) -> object:
        return parse_policy_value(name, text, retention_minimum=1)

    config = parse_config(config_with(defaults={name: sample}), {}, Path("/srv"))
    repo = RoomPolicyRepo(main, defaults_from(config))
    assert f"{name}: {sample}" in (await repo.get(DEFAULT_ROOM)).describe()

    # An override back to the built-in value (None or false included) beats the config's.
    await repo.set(RESET_ROOM, name, value(built_in), ACTOR)
    assert f"{name}: {built_in}" in (await repo.get(RESET_ROOM)).describe()

    plain = RoomPolicyRepo(main, RoomPolicy())
    await plain.set(SET_ROOM, name, value(sample), ACTOR)
    got = await plain.get(SET_ROOM)
    assert f"{name}: {sample}" in got.describe()
    assert got.with_value(name, RoomPolicy().get(name)) == RoomPolicy()  # nothing else changed
