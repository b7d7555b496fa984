"""What a hostile room member can send, against a real Synapse, Postgres and E2EE clients:
events Postgres or UTF-8 refuse, forged key-withheld notices, messages that are not text.
None of them may stop the bot or slip past the consent rules."""

from __future__ import annotations

import json
from typing import Any

from mautrix.types import EventID, EventType, RoomID

from bot.policy.audit_chain import message_hmac
from tests.e2e.admin_helpers import ask, bot_with_management_room
from tests.e2e.bot_env import HMAC_KEY, BotEnv, RunningBot
from tests.e2e.test_consent import consent_room
from tests.e2e.test_foundation import audit_rows, staffed_room, wait_rows
from tests.e2e.test_late_keys import identity_key, send_withheld, send_without_bot_key
from tests.fixtures_synapse import MakeE2EEUser


def details(row: Any) -> dict[str, Any]:
    return dict(json.loads(row["details"]))


async def send_raw(client: Any, room_id: str, event_type: str, content: dict[str, Any]) -> EventID:
    """Any content, encrypted by the sender's client as it is (the homeserver sees none of it)."""
    event_id = await client.client.send_message_event(
        RoomID(room_id), EventType.find(event_type, EventType.Class.MESSAGE), content
    )
    return EventID(str(event_id))


async def test_events_postgres_or_utf8_refuse_cost_nothing_but_themselves(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    _staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)
    sync = running_bot.app.parts.sync_loop
    before = await patient.send_text(room_id, "before")
    nul_msgtype = await send_raw(
        patient, room_id, "m.room.message", {"msgtype": "m.te\x00xt", "body": "a"}
    )
    nul_type = await send_raw(patient, room_id, "m.room.mess\x00age", {"body": "b"})
    surrogate = await send_raw(
        patient, room_id, "m.room.message", {"msgtype": "m.text", "body": "lone \ud800 half"}
    )
    after = await patient.send_text(room_id, "after")

    assert len(await wait_rows(db_url, "message.sent", event_id=after, timeout=10)) == 1
    assert len(await audit_rows(db_url, "message.sent", event_id=before)) == 1
    # Stored in a safe form: the NUL as its escape; the body's HMAC covers the exact text.
    (odd,) = await audit_rows(db_url, "message.sent", event_id=nul_msgtype)
    assert details(odd)["msgtype"] == "m.te\\u0000xt"
    (half,) = await audit_rows(db_url, "message.sent", event_id=surrogate)
    assert details(half)["hmac"] == message_hmac(HMAC_KEY.encode(), "lone \ud800 half")
    # An event type nobody audits is still tracked for retention, in a safe form.
    tracked = await running_bot.app.parts.tracker.tracked.get(nul_type)
    assert tracked is not None and tracked.event_type == "m.room.mess\\u0000age"
    # No batch failed, so no room waited.
    assert sync.outage.failures == 0 and sync.last_error is None
    assert await audit_rows(db_url, "event.failed") == []


async def test_a_forged_key_withheld_notice_cannot_blind_the_bot(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        attacker = await e2ee_user("mallory")
        # The attacker learns the admin's current megolm session (any member of a room sees
        # it on every event) and names it in a withheld notice of their own.
        await admin.send_text(management, "!chaperone help")
        session = await admin.olm.crypto_store.get_outbound_group_session(RoomID(management))
        assert session is not None
        for _ in range(2):
            await send_withheld(
                attacker,
                bot_env.bot_user,
                bot.app.gateway.device_id,
                management,
                session.id,
                identity_key(admin),
            )
        reply = await ask(admin, management, "status", "Managed rooms", bot_env.bot_user)
        assert "; given up: 0\n" in reply.content.body  # the forged notice gave up nothing
        assert await audit_rows(db_url, "decryption.failed") == []
        probe = {"sender": admin.user_id, "content": {"session_id": session.id}}
        assert bot.app.gateway.withheld.code_for(probe) is None


async def test_a_message_the_bot_may_not_read_is_judged_too(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    """A patient without consent sends what the bot has no key for, and a real client withholds
    the key: a violation like any text, redacted in the room. (Stickers and polls judged the
    same: tests/service/test_consent_enforcement.py.)"""
    _staff, patient, room = await consent_room(bot_env, e2ee_user)
    unreadable, session = await send_without_bot_key(patient, room, "you cannot read this")
    await send_withheld(
        patient,
        bot_env.bot_user,
        running_bot.app.gateway.device_id,
        room,
        session.id,
        identity_key(patient),
    )
    (violation,) = await wait_rows(db_url, "policy.violation", event_id=unreadable)
    assert details(violation)["kind"] == "patient_without_consent"
    await patient.wait_for_redaction(RoomID(room), EventID(unreadable))
    assert len(await audit_rows(db_url, "decryption.failed", event_id=unreadable)) == 1
