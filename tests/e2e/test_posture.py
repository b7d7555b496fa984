"""Room posture end to end: reported, fixed where the bot has power, drift audited and announced
in the management room; members from outside `roles.allowed_servers` flagged."""

from __future__ import annotations

import json
from typing import Any

import yaml
from mautrix.types import EventType, RoomCreatePreset

from tests.e2e.admin_helpers import ask, bot_with_management_room, set_power, state_content
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


async def test_posture_reports_fixes_what_it_may_and_announces_drift(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        bot_user = bot_env.bot_user
        # Unencrypted, public, history shared; the bot at power 50, where Synapse's defaults
        # need 100 for m.room.encryption and m.room.history_visibility.
        room = await admin.create_room(
            invite=[bot_user],
            encrypted=False,
            preset=RoomCreatePreset.PUBLIC,
            power_level_override={"users": {bot_user: 50}},
        )
        await admin.wait_for_membership(room, bot_user, "join")

        drift = await wait_rows(db_url, "posture.drift", room_id=room)
        assert len(drift) == 1
        expected = ["encryption", "join_rule", "history_visibility"]
        assert json.loads(drift[0]["details"])["new"] == expected
        alert = await admin.wait_for_message(
            management,
            sender=bot_user,
            predicate=lambda e: f"Posture drift in {room}" in e.content.body,
        )
        assert all(code in alert.content.body for code in expected)

        report = await ask(admin, room, "posture", "problem", bot_user)
        for words in ("not encrypted", "join rule public", "history visibility shared"):
            assert words in report.content.body
        assert "needs power level 100" in report.content.body

        # The management room names the room with room=.
        remote = await ask(admin, management, f"posture room={room}", "Posture of", bot_user)
        assert room in remote.content.body and "not encrypted" in remote.content.body

        partial = await ask(admin, room, "posture fix", "Posture fix", bot_user)
        assert "fixed: join_rule" in partial.content.body
        assert "could not fix encryption" in partial.content.body
        assert "could not fix history_visibility" in partial.content.body
        assert (await state_content(admin, room, "m.room.join_rules"))["join_rule"] == "invite"

        await set_power(admin, room, bot_user, 100)
        full = await ask(admin, room, "posture fix", "Posture fix", bot_user)
        assert "fixed: encryption, history_visibility" in full.content.body
        assert "could not" not in full.content.body
        assert (await state_content(admin, room, "m.room.encryption"))["algorithm"]
        history = await state_content(admin, room, "m.room.history_visibility")
        assert history["history_visibility"] == "joined"

        fixed = await wait_rows(db_url, "posture.fixed", count=2, room_id=room)
        assert [json.loads(r["details"])["fixed"] for r in fixed] == [
            ["join_rule"],
            ["encryption", "history_visibility"],
        ]
        assert json.loads(fixed[0]["details"])["not_fixed_codes"] == [
            "encryption",
            "history_visibility",
        ]
        await admin.wait_for_message(
            management, sender=bot_user, predicate=lambda e: "Posture fixed" in e.content.body
        )

        # Someone opens the room again: drift, audited with who did it, announced.
        public: dict[str, Any] = {"join_rule": "public"}
        await admin.client.send_state_event(room, EventType.ROOM_JOIN_RULES, public)
        again = await wait_rows(db_url, "posture.drift", count=2, room_id=room)
        assert len(again) == 2 and again[1]["actor"] == admin.user_id, [
            (r["actor"], r["event_id"], r["details"]) for r in again
        ]
        assert json.loads(again[1]["details"])["new"] == ["join_rule"]
        await admin.wait_for_message(
            management,
            sender=bot_user,
            predicate=lambda e: f"Posture drift in {room}: join_rule" in e.content.body,
        )


async def test_member_from_outside_allowed_servers_is_a_disclosure(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    # Every test user is on `localhost`, which this allowed list leaves out.
    async with bot_with_management_room(
        bot_env, e2ee_user, roles__allowed_servers=["clinic.example"]
    ) as (bot, admin, management):
        patient = await e2ee_user("patient")
        room = await admin.create_room(invite=[bot_env.bot_user, patient.user_id])
        await admin.wait_for_membership(room, bot_env.bot_user, "join")
        await patient.wait_for_membership(room, patient.user_id, "invite")
        await patient.join(room)

        rows = await wait_rows(
            db_url, "disclosure.external_member", room_id=room, subject=patient.user_id
        )
        assert len(rows) == 1
        assert json.loads(rows[0]["details"])["server"] == "localhost"
        alert = await admin.wait_for_message(
            management,
            sender=bot_env.bot_user,
            predicate=lambda e: f"Possible disclosure: {patient.user_id}" in e.content.body,
        )
        assert room in alert.content.body
        # The bot itself is never reported, and the room lacks the server ACL.
        assert (
            await audit_rows(db_url, "disclosure.external_member", subject=bot_env.bot_user) == []
        )
        drift = await wait_rows(db_url, "posture.drift", room_id=room)
        assert "server_acl" in json.loads(drift[0]["details"])["findings"]


async def test_rooms_joined_before_the_first_start_are_checked_from_the_initial_sync(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    """A clinic's first start: the bot is already in rooms; their posture comes from the state
    the initial sync carries (no /state request per room) and is just as complete."""
    config = yaml.safe_load(bot_env.config_path.read_text())
    bot_account = await e2ee_user(credentials=(bot_env.bot_user, config["bot"]["password"]))
    admin = await e2ee_user(credentials=bot_env.admin)
    room = await admin.create_room(
        invite=[bot_env.bot_user], encrypted=False, preset=RoomCreatePreset.PUBLIC
    )
    await bot_account.wait_for_membership(room, bot_env.bot_user, "invite")
    await bot_account.join(room)
    await bot_account.close()

    bot = await RunningBot(bot_env.config).start()
    try:
        [drift] = await wait_rows(db_url, "posture.drift", room_id=room)
        assert json.loads(drift["details"])["new"] == [
            "encryption",
            "join_rule",
            "history_visibility",
        ]
    finally:
        await bot.stop()
