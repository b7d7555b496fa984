"""Commands at the edges of the consent rules (issue 9 item 4a): a message that only
starts like a command is judged like any message, and the bot's error reply never repeats it;
a valid command is never a violation. Real Synapse, real Postgres, real E2EE clients."""

from __future__ import annotations

from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_consent import (
    body,
    bot_says,
    command,
    consent_room,
    details,
    noon_zone,
    redacted,
)
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser

FREE_TEXT = "please call me"


async def test_free_text_behind_the_prefix_is_judged_and_never_echoed(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room = await consent_room(bot_env, e2ee_user)
    await bot_says(patient, room, bot_env, "consent terms")

    # A patient without consent in a consent-required room: not a command, so a violation.
    smuggled = await patient.send_text(room, f"!chaperone help {FREE_TEXT}")
    await patient.wait_for_redaction(room, smuggled)
    error = await bot_says(patient, room, bot_env, "help: unexpected words")
    assert FREE_TEXT not in body(error) and "\n" not in body(error).strip()
    unknown = await patient.send_text(room, f"!chaperone {FREE_TEXT}")
    await patient.wait_for_redaction(room, unknown)
    await bot_says(patient, room, bot_env, "Unknown command")
    # A command the patient may not run carries words too: refused, and judged.
    refused = await patient.send_text(
        room, f'!chaperone consent record {patient.user_id} note="{FREE_TEXT}"'
    )
    await patient.wait_for_redaction(room, refused)
    await bot_says(patient, room, bot_env, "consent record: this command needs the staff role")

    # A valid command is never a violation, consent agree least of all.
    agreed = await patient.send_text(room, "!chaperone consent agree")
    await bot_says(patient, room, bot_env, "your consent is recorded")

    # Staff outside the patient's hours: the same free text is a violation, `help` is not.
    await command(
        patient,
        room,
        bot_env,
        f'consent agree hours="daily 20:00-06:00" tz={noon_zone()}',
        "your consent is recorded",
    )
    late = await staff.send_text(room, f"!chaperone help {FREE_TEXT}")
    await staff.wait_for_redaction(room, late)
    plain_help = await staff.send_text(room, "!chaperone help")
    await bot_says(staff, room, bot_env, "Commands you can use here (your role: staff)")
    await command(staff, room, bot_env, "consent list", "Consent in this room")

    assert redacted(staff, room) == {smuggled, unknown, refused, late}
    assert agreed not in redacted(staff, room) and plain_help not in redacted(staff, room)
    kinds = {
        r["event_id"]: details(r)["kind"]
        for r in await audit_rows(db_url, "policy.violation", room_id=room)
    }
    assert kinds == {
        smuggled: "patient_without_consent",
        unknown: "patient_without_consent",
        refused: "patient_without_consent",
        late: "outside_contact_hours",
    }
    for evt in patient.received(room) + staff.received(room):
        if evt.sender == bot_env.bot_user:
            assert FREE_TEXT not in body(evt) and "call me" not in body(evt)
    executed = await wait_rows(db_url, "command.executed", count=4, room_id=room)
    assert agreed in {r["event_id"] for r in executed}
    assert FREE_TEXT not in str([r["details"] for r in executed])
