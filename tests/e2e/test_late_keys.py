"""Messages that arrive before their keys: waited for, decrypted late, withheld, or given up."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import asyncpg
import pytest
from mautrix.crypto import OutboundGroupSession
from mautrix.types import (
    DeviceID,
    EncryptedEventContent,
    EncryptionAlgorithm,
    EventContent,
    EventType,
    IdentityKey,
    MessageType,
    RoomID,
    RoomKeyWithheldCode,
    RoomKeyWithheldEventContent,
    SessionID,
    TextMessageEventContent,
    UserID,
)

from bot.devtools.e2ee_client import E2EEClient
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import staffed_room, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


async def send_without_bot_key(
    sender: E2EEClient, room_id: str, body: str
) -> tuple[str, OutboundGroupSession]:
    """Send with a fresh megolm session shared with nobody else: the bot cannot decrypt it."""
    olm = sender.olm
    await olm.crypto_store.remove_outbound_group_session(RoomID(room_id))
    await olm.share_group_session(RoomID(room_id), [UserID(sender.user_id)])
    content = await olm.encrypt_megolm_event(
        RoomID(room_id),
        EventType.ROOM_MESSAGE,
        TextMessageEventContent(msgtype=MessageType.TEXT, body=body),
    )
    session = await olm.crypto_store.get_outbound_group_session(RoomID(room_id))
    assert session is not None and session.id == content.session_id
    event_id = await sender.client.send_message_event(
        RoomID(room_id),
        EventType.ROOM_ENCRYPTED,
        EncryptedEventContent(content),
        disable_encryption=True,
    )
    return str(event_id), session


def raw_content(content: dict[str, Any]) -> EventContent:
    """Content as plain JSON, e.g. deliberately malformed: mautrix sends a dict as it stands,
    though its types name only its content classes."""
    return cast(EventContent, content)


def identity_key(client: E2EEClient) -> str:
    """The Curve25519 identity key of the client's device."""
    account = client.olm.account
    assert account is not None
    return str(account.identity_key)


async def send_withheld(
    sender: E2EEClient,
    bot_user: str,
    bot_device: str,
    room_id: str,
    session_id: str,
    sender_key: str,
    code: str = "m.unverified",
) -> None:
    """`m.room_key.withheld` from `sender` to the bot's device, naming `session_id`."""
    content = RoomKeyWithheldEventContent(
        algorithm=EncryptionAlgorithm.MEGOLM_V1,
        room_id=RoomID(room_id),
        session_id=SessionID(session_id),
        sender_key=IdentityKey(sender_key),
        code=RoomKeyWithheldCode(code),
        reason="The sender has disabled encrypting to unverified devices.",
    )
    await sender.client.send_to_device(
        EventType.ROOM_KEY_WITHHELD, {UserID(bot_user): {DeviceID(bot_device): content}}
    )


async def pending_count(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pending_decryption"))
    finally:
        await conn.close()


async def wait_pending(db_url: str, count: int) -> None:
    for _ in range(100):
        if await pending_count(db_url) == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} pending events, have {await pending_count(db_url)}")


async def test_a_missing_key_is_requested_and_the_message_then_audited(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)

    async def share_with_anyone(device: object, request: object) -> bool:
        return True

    event_id, _ = await send_without_bot_key(patient, room_id, "the key comes later")
    await wait_pending(db_url, 1)
    assert await wait_rows(db_url, "message.sent", event_id=event_id, timeout=0.5) == []

    # The bot asks the sender's device for the key; this sender's client agrees to forward it.
    patient.olm.allow_key_share = share_with_anyone
    rows = await wait_rows(db_url, "message.sent", event_id=event_id, timeout=20)
    assert len(rows) == 1 and json.loads(rows[0]["details"])["encrypted"] is True
    await wait_pending(db_url, 0)
    assert await wait_rows(db_url, "decryption.failed", timeout=0.5) == []


async def test_a_withheld_key_fails_at_once_and_the_room_is_told(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)
    event_id, session = await send_without_bot_key(patient, room_id, "you may not read this")
    await wait_pending(db_url, 1)
    await send_withheld(
        patient,
        bot_env.bot_user,
        running_bot.app.gateway.device_id,
        room_id,
        session.id,
        identity_key(patient),
    )
    rows = await wait_rows(db_url, "decryption.failed", event_id=event_id, timeout=5)
    assert len(rows) == 1
    assert json.loads(rows[0]["details"])["reason"] == "withheld: m.unverified"
    notice = await staff.wait_for_message(
        room_id, sender=bot_env.bot_user, predicate=lambda e: "withheld" in e.content.body
    )
    assert patient.user_id in notice.content.body and "verify" in notice.content.body
    await wait_pending(db_url, 0)


async def test_a_key_that_never_comes_is_given_up_and_audited(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    running_bot.app.parts.retrier.give_up_after = 3.0
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)
    event_id, _ = await send_without_bot_key(patient, room_id, "lost forever")
    rows = await wait_rows(db_url, "decryption.failed", event_id=event_id, timeout=15)
    assert len(rows) == 1
    assert json.loads(rows[0]["details"])["reason"] == "key never arrived"
    assert await wait_rows(db_url, "message.sent", event_id=event_id, timeout=0.5) == []
    await wait_pending(db_url, 0)


async def test_a_malformed_encrypted_message_is_recorded_not_logged_and_blocks_nothing(
    bot_env: BotEnv,
    running_bot: RunningBot,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)
    bad = await patient.client.send_message_event(
        RoomID(room_id),
        EventType.ROOM_MESSAGE,
        raw_content({"msgtype": "m.image", "body": "private words 5c1d", "info": "not an object"}),
    )
    rows = await wait_rows(db_url, "decryption.failed", event_id=str(bad))
    assert len(rows) == 1
    good = await patient.send_text(room_id, "the next message still gets through")
    assert len(await wait_rows(db_url, "message.sent", event_id=good)) == 1
    bot_records = [r for r in caplog.records if not r.name.startswith("mau.devtools")]
    leaks = [r.name for r in bot_records if "5c1d" in r.getMessage() + (r.exc_text or "")]
    assert leaks == []
