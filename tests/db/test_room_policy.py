from __future__ import annotations

from pathlib import Path

import pytest
from mautrix.util.async_db import Database

from bot.config import parse_config
from bot.db.room_policy import RoomPolicyRepo
from bot.policy.room_policy import FIELDS, RoomPolicy, parse_policy_value
from bot.service.policy import defaults_from
from tests.unit.test_config import config_with

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
    assert await repo.get("!a:x") == defaults
    await repo.set("!a:x", "enforcement", "warn", "@admin:x")
    await repo.set("!a:x", "retention", None, "@admin:x")  # explicitly off
    got = await repo.get("!a:x")
    assert got.enforcement == "warn" and got.retention_seconds is None
    assert got.consent == defaults.consent
    await repo.set("!a:x", "legal_hold", True, "@admin:x")
    assert (await repo.get("!a:x")).legal_hold is True
    assert (await repo.get("!b:x")).retention_seconds == 86400


@pytest.mark.parametrize("name", FIELDS)
async def test_each_field_round_trips_config_db_and_listing(dbs, name: str) -> None:  # type: ignore[no-untyped-def]
    main: Database = dbs.main
    sample, built_in = SAMPLES[name], RoomPolicy().value_text(name)
    assert sample != built_in

    def value(text: str) -> object:
        return parse_policy_value(name, text, retention_minimum=1)

    config = parse_config(config_with(defaults={name: sample}), {}, Path("/srv"))
    repo = RoomPolicyRepo(main, defaults_from(config))
    assert f"{name}: {sample}" in (await repo.get("!default:x")).describe()

    # An override back to the built-in value (None or false included) beats the config's.
    await repo.set("!reset:x", name, value(built_in), "@a:x")
    assert f"{name}: {built_in}" in (await repo.get("!reset:x")).describe()

    plain = RoomPolicyRepo(main, RoomPolicy())
    await plain.set("!set:x", name, value(sample), "@a:x")
    got = await plain.get("!set:x")
    assert f"{name}: {sample}" in got.describe()
    assert got.with_value(name, RoomPolicy().get(name)) == RoomPolicy()  # nothing else changed
