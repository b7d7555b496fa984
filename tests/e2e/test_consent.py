"""Consent end to end: real Synapse, real Postgres, real E2EE clients."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from mautrix.types import MessageEvent, RoomID

from bot.clock import FakeClock
from bot.config import DEFAULT_TERMS
from bot.devtools.e2ee_client import E2EEClient
from bot.policy.consent import terms_sha256
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


def noon_zone() -> str:
    """A fixed-offset zone where it is now about noon, so `daily 08:00-20:00` holds now and
    for hours to come, and `daily 20:00-06:00` does not (whenever the test runs)."""
    k = 12 - datetime.now(UTC).hour  # hours east of UTC
    return "Etc/GMT" if k == 0 else f"Etc/GMT{-k:+d}"  # Etc/GMT-3 is UTC+3


async def consent_room(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, *, bot_first: bool = True
) -> tuple[E2EEClient, E2EEClient, RoomID]:
    """A staff member's encrypted room with a patient and the bot, which has the power to
    redact (a clinic gives it moderator power). With `bot_first` False the patient is there
    before the bot is invited."""
    staff = await e2ee_user(credentials=bot_env.staff)
    patient = await e2ee_user("patient")
    invite = [patient.user_id, bot_env.bot_user] if bot_first else [patient.user_id]
    room = await staff.create_room(
        invite=invite, name="care", power_level_override={"users": {bot_env.bot_user: 50}}
    )
    if bot_first:
        await staff.wait_for_membership(room, bot_env.bot_user, "join")
    await patient.wait_for_membership(room, patient.user_id, "invite")
    await patient.join(room)
    if not bot_first:
        await staff.invite(room, bot_env.bot_user)
        await staff.wait_for_membership(room, bot_env.bot_user, "join")
    return staff, patient, room


def body(evt: MessageEvent) -> str:
    return str(evt.content.body)


def mentions(evt: MessageEvent) -> list[str]:
    content: dict[str, Any] = evt.content.serialize()
    return list(content.get("m.mentions", {}).get("user_ids", []))


async def bot_says(client: E2EEClient, room: RoomID, bot: BotEnv, text: str) -> MessageEvent:
    return await client.wait_for_message(
        room, sender=bot.bot_user, predicate=lambda e: text in body(e)
    )


async def command(
    client: E2EEClient, room: RoomID, bot: BotEnv, line: str, expect: str
) -> MessageEvent:
    """Send a command and wait for the reply containing `expect`. As the bot handles events in
    order, everything the bot does about earlier messages has happened by then."""
    await client.send_text(room, f"!chaperone {line}")
    return await bot_says(client, room, bot, expect)


def notices(client: E2EEClient, room: RoomID, bot: BotEnv, text: str) -> list[MessageEvent]:
    return [e for e in client.received(room) if e.sender == bot.bot_user and text in body(e)]


def redacted(client: E2EEClient, room: RoomID) -> set[str]:
    return {str(r.redacts) for r in client.received_redactions(room)}


async def consent_rows(db_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch("SELECT * FROM consent ORDER BY id")
        return rows
    finally:
        await conn.close()


def details(row: asyncpg.Record) -> dict[str, Any]:
    return dict(json.loads(row["details"]))


async def test_terms_on_join_then_unconsented_message_redacted_once_noticed_then_agree(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room = await consent_room(bot_env, e2ee_user)

    terms = await bot_says(patient, room, bot_env, "consent terms")
    assert patient.was_encrypted(terms)
    assert mentions(terms) == [patient.user_id]
    assert "The risk:" in body(terms) and "consent agree" in body(terms)
    posted = await wait_rows(db_url, "consent.terms_posted", room_id=room)
    assert [r["subject"] for r in posted] == [patient.user_id]
    assert details(posted[0])["terms_sha256"] == terms_sha256(DEFAULT_TERMS)

    first = await patient.send_text(room, "hello, is anyone there")
    await patient.wait_for_redaction(room, first)
    notice = await bot_says(patient, room, bot_env, "your message was removed")
    assert mentions(notice) == [patient.user_id]
    second = await patient.send_text(room, "hello again")
    await patient.wait_for_redaction(room, second)

    await command(patient, room, bot_env, "consent agree", "your consent is recorded")
    assert len(notices(patient, room, bot_env, "removed")) == 1  # not repeated within 10 min
    third = await patient.send_text(room, "thanks, see you tuesday")
    await command(patient, room, bot_env, "consent", "Your consent here: valid until")
    assert third not in redacted(patient, room)
    assert redacted(patient, room) == {first, second}

    violations = await audit_rows(db_url, "policy.violation", room_id=room)
    assert [r["event_id"] for r in violations] == [first, second]
    assert {details(r)["kind"] for r in violations} == {"patient_without_consent"}
    assert details(violations[0])["patients"] == [patient.user_id]
    removed = [
        r
        for r in await audit_rows(db_url, "message.redacted", room_id=room)
        if details(r).get("cause") == "policy.violation"
    ]
    assert sorted(details(r)["redacts"] for r in removed) == sorted([first, second])
    assert len(await audit_rows(db_url, "message.redacted", room_id=room)) == 2  # not twice

    [row] = await consent_rows(db_url)
    assert (row["user_id"], row["source"], row["event_id"] is not None) == (
        patient.user_id,
        "message",
        True,
    )
    assert row["terms_sha256"] == terms_sha256(DEFAULT_TERMS)
    assert row["hours"] == "Mon-Fri 09:00-17:00" and row["max_per_day"] == 10
    [granted] = await audit_rows(db_url, "consent.granted", room_id=room)
    assert (granted["actor"], granted["subject"]) == (patient.user_id, patient.user_id)
    assert details(granted)["terms_sha256"] == row["terms_sha256"]


async def test_staff_messages_outside_hours_and_after_revoke_are_flagged(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room = await consent_room(bot_env, e2ee_user)
    await bot_says(patient, room, bot_env, "consent terms")
    tz = noon_zone()

    # The patient agrees to evening and night hours only: now is outside them.
    await command(
        patient,
        room,
        bot_env,
        f'consent agree hours="daily 20:00-06:00" tz={tz} max_per_day=1',
        "your consent is recorded",
    )
    await patient.send_text(room, "are you there?")
    after_hours = await bot_says(patient, room, bot_env, "not monitored")
    assert mentions(after_hours) == [patient.user_id] and "988" in body(after_hours)
    await patient.send_text(room, "hello?")
    late = await staff.send_text(room, "your appointment is confirmed")
    await staff.wait_for_redaction(room, late)
    flagged = await bot_says(staff, room, bot_env, "outside the contact hours")
    assert mentions(flagged) == [staff.user_id]
    assert len(notices(patient, room, bot_env, "not monitored")) == 1  # once per stretch
    assert len(await audit_rows(db_url, "notice.after_hours", room_id=room)) == 1

    [violation] = await audit_rows(db_url, "policy.violation", room_id=room)
    assert (violation["event_id"], details(violation)["kind"]) == (late, "outside_contact_hours")

    # A revoke by chat command: the next staff message is removed. (Over the daily limit, and
    # each kind's notices and counts: tests/service/test_consent_enforcement.py.)
    await command(patient, room, bot_env, "consent revoke", "consent is withdrawn")
    after_revoke = await staff.send_text(room, "one more thing")
    await staff.wait_for_redaction(room, after_revoke)
    [revoked] = await audit_rows(db_url, "consent.revoked", room_id=room)
    assert revoked["subject"] == patient.user_id
    rows = await consent_rows(db_url)
    assert [r["revoked_at"] is not None for r in rows] == [True]


async def test_offline_consent_by_staff_with_its_note_and_bad_values_record_nothing(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    # The patient is in the room before the bot: the bot asks when it joins.
    staff, patient, room = await consent_room(bot_env, e2ee_user, bot_first=False)
    terms = await bot_says(patient, room, bot_env, "consent terms")
    assert mentions(terms) == [patient.user_id]
    # (The bot sees the patient's earlier join in the room's history too: asked once all the same.)
    [posted] = await wait_rows(db_url, "consent.terms_posted", room_id=room)
    assert posted["subject"] == patient.user_id

    who = patient.user_id
    for line, argument in [
        (f'consent record {who} hours=Mon-Fri 25:00-17:00 note="form 7"', "hours: "),
        (f'consent record {who} tz=Mars/Base note="form 7"', "tz: "),
        (f'consent record {who} max_per_day=-1 note="form 7"', "max_per_day: "),
        (f'consent record {who} topics= note="form 7"', "topics: "),
        (f"consent record {who}", "missing note=.."),
        ("consent record patient", "user: "),
    ]:
        error = await command(staff, room, bot_env, line, f"consent record: {argument}")
        assert "\n" not in body(error).strip()
        assert "expected" in body(error) or "usage" in body(error)
    await command(
        patient, room, bot_env, "consent agree hours=Mon-Fri 25:00-17:00", "consent agree: hours"
    )
    assert await consent_rows(db_url) == []
    assert await audit_rows(db_url, "consent.granted") == []

    await command(
        patient, room, bot_env, f'consent record {who} note="mine"', "needs the staff role"
    )
    reply = await command(
        staff,
        room,
        bot_env,
        f'consent record {who} hours="Mon-Fri 09:00-12:00; Sat 10:00-12:00" tz=Europe/Berlin '
        'max_per_day=3 topics=scheduling,billing note="paper form 2026-11-20"',
        "Offline consent",
    )
    assert "paper form 2026-11-20" in body(reply)
    [row] = await consent_rows(db_url)
    assert (row["source"], row["recorded_by"], row["note"]) == (
        "offline",
        staff.user_id,
        "paper form 2026-11-20",
    )
    assert row["hours"] == "Mon-Fri 09:00-12:00; Sat 10:00-12:00"
    assert (row["timezone"], row["max_per_day"], list(row["topics"])) == (
        "Europe/Berlin",
        3,
        ["scheduling", "billing"],
    )
    assert row["terms_sha256"] == terms_sha256(DEFAULT_TERMS)
    [granted] = await audit_rows(db_url, "consent.granted", room_id=room)
    assert (granted["actor"], granted["subject"]) == (staff.user_id, who)
    assert details(granted)["source"] == "offline"
    listing = await command(staff, room, bot_env, "consent list", "Consent in this room")
    assert who in body(listing) and "offline form" in body(listing)


async def test_renewal_is_asked_before_expiry_and_expiry_is_recorded(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    bot_env.write_config(consent__valid_days=1)
    bot = await RunningBot(bot_env.config).start()
    try:
        staff, patient, room = await consent_room(bot_env, e2ee_user)
        await command(patient, room, bot_env, "consent agree", "your consent is recorded")
        consent, renewal = bot.app.parts.consent, bot.app.parts.consent_renewal
        now = datetime.now(UTC)

        consent.clock = FakeClock(now + timedelta(hours=23))
        posted_before = len(await audit_rows(db_url, "consent.terms_posted"))
        await renewal.check_consents()
        asked = await bot_says(patient, room, bot_env, "To keep texting")
        assert mentions(asked) == [patient.user_id] and "The risk:" in body(asked)
        # Recorded by the outbox once the notice is out (a moment after the patient sees it).
        posted = await wait_rows(db_url, "consent.terms_posted", count=posted_before + 1)
        assert details(posted[-1])["reason"] == "expiring"
        await renewal.check_consents()  # asked once

        consent.clock = FakeClock(now + timedelta(hours=25))
        await renewal.check_consents()
        await bot_says(patient, room, bot_env, "expired on")
        await renewal.check_consents()  # recorded once
        [expired] = await audit_rows(db_url, "consent.expired", room_id=room)
        assert (expired["actor"], expired["subject"]) == ("system", patient.user_id)
        await command(patient, room, bot_env, "consent", "Your consent here: expired on")
        assert len(notices(patient, room, bot_env, "To keep texting")) == 1
    finally:
        await bot.stop()
