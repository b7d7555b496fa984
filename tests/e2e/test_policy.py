"""Room policy commands and the enforcement modes, end to end."""

from __future__ import annotations

from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_consent import (
    bot_says,
    command,
    consent_room,
    details,
    notices,
    redacted,
)
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


async def test_warn_and_audit_modes_do_not_redact_and_only_admins_change_policy(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room = await consent_room(bot_env, e2ee_user)
    admin = await e2ee_user(credentials=bot_env.admin)
    await staff.invite(room, admin.user_id)
    await admin.wait_for_membership(room, admin.user_id, "invite")
    await admin.join(room)
    await bot_says(patient, room, bot_env, "consent terms")

    await command(admin, room, bot_env, "policy set enforcement warn", "redact → warn")
    warned = await patient.send_text(room, "hi, I have a question")
    notice = await bot_says(patient, room, bot_env, "please note")
    assert "consent agree" in str(notice.content.body)

    await command(admin, room, bot_env, "policy set enforcement audit", "warn → audit")
    audited = await patient.send_text(room, "hello?")
    listing = await command(staff, room, bot_env, "policy", "Policy of this room")
    assert "enforcement: audit" in str(listing.content.body)
    assert "consent: required" in str(listing.content.body)

    # Only admins change the policy: refused, naming the role, and audited. A refused command
    # did nothing for its sender and its words stand in the room, so it is judged like any
    # message (here in audit mode: recorded only).
    refused = await command(
        patient, room, bot_env, "policy set consent off", "needs the admin role"
    )
    assert "\n" not in str(refused.content.body).strip()
    [denied] = await audit_rows(db_url, "command.denied", room_id=room)
    assert denied["actor"] == patient.user_id and details(denied)["command"] == "policy set"
    await command(staff, room, bot_env, "policy set enforcement warn", "needs the admin role")
    assert len(await wait_rows(db_url, "command.denied", count=2, room_id=room)) == 2

    assert redacted(patient, room) == set()
    assert len(notices(patient, room, bot_env, "please note")) == 1  # audit mode says nothing
    violations = await wait_rows(db_url, "policy.violation", count=4, room_id=room)
    assert [(r["actor"], details(r)["enforcement"]) for r in violations] == [
        (patient.user_id, "warn"),
        (patient.user_id, "audit"),
        (patient.user_id, "audit"),
        (staff.user_id, "audit"),
    ]
    assert [r["event_id"] for r in violations[:2]] == [warned, audited]
    assert await audit_rows(db_url, "message.redacted", room_id=room) == []

    # Bad values: one line naming the field and what is expected, never the value; nothing
    # changes.
    for line, fragment in [
        ("policy set retention 5x", "value: not valid for retention"),
        ("policy set enforcement delete", "expected one of redact, warn, audit"),
        ("policy set colour blue", "field: not valid; expected one of consent"),
        ("policy set consent", "missing <value>"),
    ]:
        error = await command(admin, room, bot_env, line, fragment)
        assert "\n" not in str(error.content.body).strip()
        assert not {"5x", "delete", "colour"} & set(str(error.content.body).split())
    changes = await audit_rows(db_url, "policy.changed", room_id=room)
    assert [details(r)["new"] for r in changes] == ["warn", "audit"]

    await command(admin, room, bot_env, "policy set retention 30d", "retention off → 30d")
    changes = await audit_rows(db_url, "policy.changed", room_id=room)
    assert details(changes[-1]) == {"field": "retention", "old": "off", "new": "30d"}
    assert changes[-1]["actor"] == admin.user_id
    assert (await running_bot.app.parts.policy.get(room)).retention_seconds == 30 * 86400


async def test_switching_consent_to_required_asks_the_patients_already_there(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    bot_env.write_config(defaults__consent="off")
    bot = await RunningBot(bot_env.config).start()
    try:
        staff, patient, room = await consent_room(bot_env, e2ee_user)
        admin = await e2ee_user(credentials=bot_env.admin)
        await staff.invite(room, admin.user_id)
        await admin.wait_for_membership(room, admin.user_id, "invite")
        await admin.join(room)
        await patient.send_text(room, "no consent needed here yet")
        await command(staff, room, bot_env, "policy", "consent: off")
        assert await audit_rows(db_url, "consent.terms_posted", room_id=room) == []

        await command(admin, room, bot_env, "policy set consent required", "off → required")
        terms = await bot_says(patient, room, bot_env, "consent agree")
        assert patient.user_id in str(terms.content.body)
        # Recorded by the outbox once the terms are out (a moment after the patient sees them).
        [posted] = await wait_rows(db_url, "consent.terms_posted", room_id=room)
        assert posted["subject"] == patient.user_id
    finally:
        await bot.stop()
