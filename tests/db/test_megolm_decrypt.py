"""bot.matrix.megolm decrypts as mautrix's `decrypt_megolm_event` does (same event, same trust,
same error class), over dicts, against a real crypto store in Postgres; and a sender device's
trust is judged once per batch (bot.matrix.verification.install_trust)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from mautrix.client import Client
from mautrix.crypto import InboundGroupSession, OlmMachine
from mautrix.errors import (
    DecryptedPayloadError,
    DecryptionError,
    DuplicateMessageIndex,
    MismatchingRoomError,
    SessionNotFound,
)
from mautrix.types import (
    JSON,
    DeviceID,
    DeviceIdentity,
    EncryptedEvent,
    IdentityKey,
    RoomID,
    SessionID,
    SigningKey,
    TrustState,
    UserID,
)
from mautrix.types.util.serializable import SerializerError
from olm.group_session import OutboundGroupSession

from bot.batch_scope import batch_scope
from bot.db.database import Databases
from bot.matrix.crypto_store import BatchCachingCryptoStore
from bot.matrix.megolm import MegolmDecryptor
from bot.matrix.state_store import MemberListStateStore
from bot.matrix.verification import VerificationMatrix

ROOM = "!room:x"
SENDER, SENDER_DEVICE = "@staff:x", "STAFFDEVICE"
SENDER_KEY, SENDER_SIGNING = "sender-curve25519-key", "sender-ed25519-key"


class Sender:
    def __init__(self) -> None:
        self.outbound = OutboundGroupSession()
        self.count = 0

    def event(
        self, content: dict[str, Any], *, room: str = ROOM, outer: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        payload = json.dumps({"room_id": room, "type": "m.room.message", "content": content})
        self.count += 1
        return {
            "type": "m.room.encrypted",
            "room_id": ROOM,
            "event_id": f"$event{self.count}",
            "sender": SENDER,
            "origin_server_ts": 1_700_000_000_000 + self.count,
            "unsigned": {"age": 12},
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": SENDER_KEY,
                "device_id": SENDER_DEVICE,
                "session_id": self.outbound.id,
                "ciphertext": self.outbound.encrypt(payload),
                **(outer or {}),
            },
        }


@pytest.fixture
async def machine(dbs: Databases) -> AsyncIterator[OlmMachine]:
    store = BatchCachingCryptoStore(UserID("@bot:x"), "pickle-key", dbs.crypto)
    await store.open()
    # Nothing listens here: a homeserver request would fail (none is made for a known device).
    client = Client(
        mxid=UserID("@bot:x"), device_id=DeviceID("BOTDEVICE"), base_url="http://127.0.0.1:9"
    )
    machine = OlmMachine(client, store, MemberListStateStore(dbs.state))
    await machine.load()
    await store.put_devices(
        UserID(SENDER),
        {
            DeviceID(SENDER_DEVICE): DeviceIdentity(
                user_id=UserID(SENDER),
                device_id=DeviceID(SENDER_DEVICE),
                identity_key=IdentityKey(SENDER_KEY),
                signing_key=SigningKey(SENDER_SIGNING),
                trust=TrustState.VERIFIED,
                deleted=False,
                name="",
            )
        },
    )
    yield machine
    await client.api.session.close()


async def share(machine: OlmMachine, sender: Sender) -> None:
    session = InboundGroupSession(
        session_key=sender.outbound.session_key,
        signing_key=SigningKey(SENDER_SIGNING),
        sender_key=IdentityKey(SENDER_KEY),
        room_id=RoomID(ROOM),
    )
    await machine.crypto_store.put_group_session(
        RoomID(ROOM), IdentityKey(SENDER_KEY), SessionID(session.id), session
    )


async def by_mautrix(machine: OlmMachine, raw: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    result = await machine.decrypt_megolm_event(
        EncryptedEvent.deserialize(cast(JSON, copy.deepcopy(raw)))
    )
    trust = result["mautrix"]["trust_state"]
    plain = result.serialize()
    plain.pop("mautrix")
    return plain, trust


async def test_the_decrypted_event_and_trust_are_mautrix_s(machine: OlmMachine) -> None:
    sender = Sender()
    await share(machine, sender)
    ours = MegolmDecryptor(machine)
    reply = {"m.in_reply_to": {"event_id": "$earlier"}}
    events = [
        sender.event({"msgtype": "m.text", "body": "hello"}),
        sender.event({"msgtype": "m.notice", "body": "x" * 500, "format": "org.x"}),
        sender.event({"msgtype": "m.text", "body": "a reply"}, outer={"m.relates_to": reply}),
    ]
    for raw in events:
        untouched = copy.deepcopy(raw)
        got, trust = await ours.decrypt(raw)
        assert raw == untouched
        assert (got, trust) == await by_mautrix(machine, raw)
        assert trust == TrustState.VERIFIED
    assert (await ours.decrypt(events[2]))[0]["content"]["m.relates_to"] == reply


async def test_each_failure_raises_the_class_mautrix_raises(machine: OlmMachine) -> None:
    sender = Sender()
    ours = MegolmDecryptor(machine)
    unknown = sender.event({"msgtype": "m.text", "body": "before the key"})
    with pytest.raises(SessionNotFound):
        await ours.decrypt(unknown)
    await share(machine, sender)

    elsewhere = sender.event({"msgtype": "m.text", "body": "x"}, room="!other:x")
    replayed = {**sender.event({"msgtype": "m.text", "body": "once"}), "event_id": "$copy"}
    original = {**replayed, "event_id": "$original"}
    garbled = sender.event({"msgtype": "m.text", "body": "y"})
    garbled["content"]["ciphertext"] = "AwgA" + garbled["content"]["ciphertext"][8:]
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        (elsewhere, MismatchingRoomError),
        (garbled, DecryptionError),
        ({**unknown, "content": {**unknown["content"], "algorithm": "m.olm.v1"}}, DecryptionError),
    ]
    await ours.decrypt(original)
    cases.append((replayed, DuplicateMessageIndex))
    for raw, error in cases:
        with pytest.raises(error):
            await by_mautrix(machine, raw)
        with pytest.raises(error):
            await ours.decrypt(raw)


async def test_an_unreadable_envelope_or_payload_is_a_decryption_error(
    machine: OlmMachine,
) -> None:
    sender = Sender()
    await share(machine, sender)
    ours = MegolmDecryptor(machine)
    good = sender.event({"msgtype": "m.text", "body": "z"})
    for broken in (
        {**good, "origin_server_ts": "yesterday"},
        {**good, "sender": None},
        {**good, "content": "not a dict"},
        {**good, "content": {**good["content"], "m.relates_to": "not a dict"}},
        {**good, "content": {**good["content"], "ciphertext": 5}},
    ):
        with pytest.raises(DecryptionError):
            await ours.decrypt(broken)
    unreadable = sender.event({"msgtype": "m.image", "body": "b", "info": "not an object"})
    with pytest.raises(SerializerError):  # mautrix cannot read it (the gateway: undecodable)
        await by_mautrix(machine, unreadable)
    with pytest.raises(DecryptionError):
        await ours.decrypt(unreadable)
    not_json = {**good, "event_id": "$nj"}
    not_json["content"] = {**good["content"], "ciphertext": sender.outbound.encrypt("{nope")}
    with pytest.raises(DecryptedPayloadError):
        await ours.decrypt(not_json)
    no_content = {**good, "event_id": "$nc"}
    no_content["content"] = {
        **good["content"],
        "ciphertext": sender.outbound.encrypt(json.dumps({"room_id": ROOM, "type": "m.x"})),
    }
    with pytest.raises(DecryptedPayloadError):
        await ours.decrypt(no_content)


async def test_a_device_s_trust_is_judged_once_per_batch(machine: OlmMachine) -> None:
    """Every message of a sender's device asks for its trust: mautrix's verdict (and the
    signature check) once per batch, forgotten when keys or signatures change; a device
    verified meanwhile counts at once."""
    asked: list[str] = []
    mautrix_resolve = machine.resolve_trust

    async def counted(device: DeviceIdentity, allow_fetch: bool = True) -> TrustState:
        asked.append(device.device_id)
        return await mautrix_resolve(device, allow_fetch)

    machine.resolve_trust = counted  # type: ignore[method-assign]
    verified: set[tuple[str, str, str]] = set()
    gateway = cast(Any, type("Gateway", (), {"machine": machine, "user_id": UserID("@bot:x")}))
    VerificationMatrix(gateway).install_trust(verified)
    device = DeviceIdentity(
        user_id=UserID(SENDER),
        device_id=DeviceID("OTHER"),
        identity_key=IdentityKey("other-key"),
        signing_key=SigningKey("other-signing"),
        trust=TrustState.UNVERIFIED,
        deleted=False,
        name="",
    )
    machine._cs_fetch_attempted.add(UserID(SENDER))  # no homeserver to fetch keys from here
    with batch_scope():
        assert await machine.resolve_trust(device) == TrustState.UNVERIFIED
        assert await machine.resolve_trust(device) == TrustState.UNVERIFIED
        assert asked == ["OTHER"]
        verified.add((SENDER, "OTHER", "other-signing"))
        assert await machine.resolve_trust(device) == TrustState.VERIFIED
        await machine.crypto_store.put_devices(UserID(SENDER), {})
        await machine.resolve_trust(device)
        assert asked == ["OTHER", "OTHER"]
    await machine.resolve_trust(device)  # outside a batch: asked every time
    await machine.resolve_trust(device)
    assert len(asked) == 4
