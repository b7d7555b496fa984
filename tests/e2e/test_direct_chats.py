"""Direct chats as Element makes them: the `trusted_private_chat` preset gives the
invitee power 100 (room version 10) or makes them an additional creator (version 12). The
invitee is still a patient: terms posted, messages judged, staff commands refused, and the power
they hold reported as the posture finding `patient_power`."""

from __future__ import annotations

import json

import pytest

from tests.e2e.admin_helpers import ask, bot_with_management_room, state_content
from tests.e2e.bot_env import BotEnv
from tests.e2e.test_consent import bot_says, command, mentions
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_patient_in_an_element_direct_chat_is_a_patient(
    room_version: str, bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        bot_user = bot_env.bot_user
        therapist = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room = await therapist.create_direct_chat(patient.user_id, room_version=room_version)

        # The room really is what Element makes.
        create = await state_content(therapist, room, "m.room.create")
        levels = await state_content(therapist, room, "m.room.power_levels")
        assert create.get("room_version") == room_version
        if room_version == "12":
            assert create["additional_creators"] == [patient.user_id]
            assert patient.user_id not in levels.get("users", {})
        else:
            assert levels["users"][patient.user_id] == 100
        direct = await therapist.client.get_account_data("m.direct")
        assert room in direct[patient.user_id]

        await therapist.invite(room, bot_user)  # Element: invited later, at level 0
        await therapist.wait_for_membership(room, bot_user, "join")
        await patient.wait_for_membership(room, patient.user_id, "invite")
        await patient.join(room)

        terms = await bot_says(patient, room, bot_env, "consent terms")
        assert mentions(terms) == [patient.user_id]
        posted = await wait_rows(db_url, "consent.terms_posted", room_id=room)
        assert [r["subject"] for r in posted] == [patient.user_id]

        # What they and the therapist write is judged (the bot lacks the power to redact in
        # the DM; the violation is on the record all the same).
        said = await patient.send_text(room, "hello, it's me")
        answered = await therapist.send_text(room, "hi, how are you")
        violations = await wait_rows(db_url, "policy.violation", count=2, room_id=room)
        assert [r["event_id"] for r in violations] == [said, answered]

        for line in (
            f"consent record {patient.user_id} note=phone",
            "audit tail",
            "consent list",
            "status",
        ):
            refused = await command(patient, room, bot_env, line, "⛔")
            assert "staff" in str(refused.content.body)
        denied = await audit_rows(db_url, "command.denied", room_id=room)
        assert [json.loads(r["details"])["role"] for r in denied] == ["patient"] * 4

        # The power the preset gave them is a posture finding, reported and explained.
        drift = await wait_rows(db_url, "posture.drift", room_id=room)
        assert "patient_power" in json.loads(drift[0]["details"])["findings"]
        report = await ask(therapist, room, "posture", "patient_power", bot_user)
        text = str(report.content.body)
        assert patient.user_id in text and therapist.user_id not in text.split("patient_power")[1]
        if room_version == "12":
            assert "(room creator)" in text and "cannot be demoted" in text
        else:
            assert "(power 100)" in text and "higher power level" in text
        assert "room new" in text
        fix = await ask(admin, management, f"posture fix room={room}", "Posture fix in", bot_user)
        assert "could not fix patient_power" in str(fix.content.body)


async def test_posture_fix_lowers_a_patient_moderator_where_the_bot_outranks_them(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        bot_user = bot_env.bot_user
        therapist = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room = await therapist.create_room(
            invite=[bot_user, patient.user_id],
            room_version="10",
            power_level_override={
                "users": {therapist.user_id: 100, bot_user: 100, patient.user_id: 50}
            },
        )
        await therapist.wait_for_membership(room, bot_user, "join")
        drift = await wait_rows(db_url, "posture.drift", room_id=room)
        assert json.loads(drift[0]["details"])["new"][-1] == "patient_power"
        report = await ask(therapist, room, "posture", "patient_power", bot_user)
        assert f"{patient.user_id} (power 50)" in str(report.content.body)
        assert "`posture fix` can do this" in str(report.content.body)

        fix = await ask(admin, management, f"posture fix room={room}", "Posture fix in", bot_user)
        assert "patient_power" in str(fix.content.body).split("fixed:")[1]
        levels = await state_content(therapist, room, "m.room.power_levels")
        assert levels["users"][patient.user_id] == 0
        assert levels["users"][therapist.user_id] == 100  # the rest untouched
        assert await ask(therapist, room, "posture", "all checks pass", bot_user)
