"""`room new` end to end: the bot creates a room that passes every posture check, the
patient joins and receives the terms; bad requests get a one-line error that repeats nothing."""

from __future__ import annotations

import json
import re

from mautrix.types import RoomID, TextMessageEventContent

from tests.e2e.admin_helpers import ask, bot_with_management_room, state_content
from tests.e2e.bot_env import BotEnv
from tests.e2e.test_consent import bot_says
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser

NAME = 'Care & <script>alert("x")</script>'


async def test_room_new_is_born_compliant_and_the_patient_gets_the_terms(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(
        bot_env, e2ee_user, roles__allowed_servers=["localhost"]
    ) as (bot, admin, management):
        bot_user = bot_env.bot_user
        therapist = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        office = await therapist.create_room(invite=[bot_user], name="office")
        await therapist.wait_for_membership(office, bot_user, "join")

        line = f"room new {patient.user_id} {admin.user_id} name='{NAME}'"
        reply = await ask(therapist, office, line, "is ready", bot_user)
        body = str(reply.content.body)
        match = re.search(r"https://matrix\.to/#/(![^?\s]+)\?via=localhost", body)
        assert match, body
        room = RoomID(match.group(1))
        assert f"“{NAME}”" in body and patient.user_id in body and "Invited:" in body
        # What Element renders: the name escaped, users as pills, the link bold.
        assert isinstance(reply.content, TextMessageEventContent)
        html = str(reply.content.formatted_body)
        assert reply.content.serialize()["format"] == "org.matrix.custom.html"
        assert "<script>" not in html and "&lt;script&gt;" in html and "Care &amp; " in html
        assert f'<a href="https://matrix.to/#/{patient.user_id}">' in html
        assert "<strong>Open it:" in html and "<ul><li>end-to-end encrypted</li>" in html

        [created] = await wait_rows(db_url, "room.created", room_id=room)
        assert (created["actor"], created["subject"]) == (therapist.user_id, patient.user_id)
        details = json.loads(created["details"])
        assert details["invited"] == [patient.user_id, therapist.user_id, admin.user_id]
        assert details["dry_run"] is False and details["server_acl"] is True

        for member in (therapist, admin, patient):
            await member.wait_for_membership(room, member.user_id, "invite")
            await member.join(room)
        terms = await bot_says(patient, room, bot_env, "consent terms")
        assert patient.was_encrypted(terms)

        create = await state_content(therapist, room, "m.room.create")
        levels = await state_content(therapist, room, "m.room.power_levels")
        assert create.get("creator", bot_user) == bot_user  # v12 drops `creator`: the sender
        assert levels["users"].get(patient.user_id, 0) == 0
        assert levels["users"][therapist.user_id] == 50 and levels["users"][admin.user_id] == 50
        if create.get("room_version") == "12":
            assert bot_user not in levels["users"]  # the creator is above every level
        else:
            assert levels["users"][bot_user] == 100
        acl = await state_content(therapist, room, "m.room.server_acl")
        assert acl["allow"] == ["localhost"] and acl["allow_ip_literals"] is False

        report = await ask(therapist, room, "posture", "Posture of", bot_user)
        assert "all checks pass" in str(report.content.body), report.content.body
        drift = await audit_rows(db_url, "posture.drift", room_id=room)
        assert drift == [], [r["details"] for r in drift]


async def test_room_new_refuses_bad_requests_without_repeating_them(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        bot_user = bot_env.bot_user
        therapist = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        office = await therapist.create_room(invite=[bot_user, patient.user_id])
        await therapist.wait_for_membership(office, bot_user, "join")
        await patient.wait_for_membership(office, patient.user_id, "invite")
        await patient.join(office)

        cases = [
            ("room new <script>", "patient: not valid; expected a user ID"),
            (f"room new {patient.user_id} @x<b>:localhost", "staff: not valid"),
            (f"room new {patient.user_id} @nobody:localhost", "user 1 is not on the staff list"),
            (f"room new {therapist.user_id}", "name the patient"),
            (f"room new {admin.user_id}", "staff or an admin"),
            (f'room new {patient.user_id} name="a\tb<i>"', "name: not valid"),
            (f"room new {patient.user_id} name={'n' * 256}", "name: not valid"),
        ]
        for line, expect in cases:
            reply = await ask(therapist, office, line, expect, bot_user)
            assert "<b>" not in str(reply.content.body) and "<i>" not in str(reply.content.body)
            assert "<script" not in str(reply.content.body) and "n" * 256 not in reply.content.body
        # Element renders help as a list of commands.
        shown = await ask(patient, office, "help", "Commands you can use here", bot_user)
        assert shown.content.serialize()["format"] == "org.matrix.custom.html"
        assert isinstance(shown.content, TextMessageEventContent)
        assert "<ul><li><code>!chaperone help</code>" in str(shown.content.formatted_body)
        assert "• !chaperone help — " in str(shown.content.body)
        refused = await ask(patient, office, f"room new {patient.user_id}", "⛔", bot_user)
        assert "staff" in str(refused.content.body)
        assert await audit_rows(db_url, "room.created") == []
