"""Decrypting a megolm event as a plain dict, the way mautrix's
`MegolmDecryptionMachine.decrypt_megolm_event` does, minus its event classes.

mautrix parses the encrypted event into its classes, the decrypted one too, and the gateway
serialized that back into the dict the pipeline reads: three conversions per message. Here
the same steps run over dicts: the session (read once per batch by the crypto store), the olm
decryption, replay protection (the message index belongs to this event), mautrix's ratchet
bookkeeping, the sender device's trust, the payload's room; mautrix still parses the
decrypted event, only to refuse what it cannot read, as before. Each failure raises the
error class mautrix raises for it.

The one mautrix internal it relies on, the ratchet bookkeeping after each decryption, is
called through `bot.mautrix_compat.megolm` (guarded by tests/unit/test_mautrix_compat.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any, cast

from mautrix.crypto import OlmMachine
from mautrix.errors import (
    DecryptedPayloadError,
    DecryptionError,
    DuplicateMessageIndex,
    MismatchingRoomError,
    SessionNotFound,
    VerificationError,
)
from mautrix.types import (
    JSON,
    Event,
    EventID,
    IdentityKey,
    RelatesTo,
    RoomID,
    SessionID,
    TrustState,
    UserID,
)
from olm.group_session import OlmGroupSessionError

from bot.mautrix_compat.megolm import ratchet_after_decrypt

MEGOLM = "m.megolm.v1.aes-sha2"


class MegolmDecryptor:
    """Decrypts megolm events for one olm machine, one at a time (as mautrix's own lock)."""

    def __init__(self, machine: OlmMachine) -> None:
        self.machine = machine
        self._lock = asyncio.Lock()

    async def decrypt(self, raw: dict[str, Any]) -> tuple[dict[str, Any], TrustState]:
        """The decrypted event (room, ID, sender, time and `unsigned` of the encrypted one;
        type and content from the payload) and the sender device's trust."""
        room_id, event_id, sender, ts, content = _envelope(raw)
        if content.get("algorithm") != MEGOLM:
            raise DecryptionError("Unsupported event encryption algorithm")
        session_id, ciphertext = content.get("session_id"), content.get("ciphertext")
        if not isinstance(session_id, str) or not isinstance(ciphertext, str):
            raise DecryptionError("undecodable event")
        machine, store = self.machine, self.machine.crypto_store
        async with self._lock:
            session = await store.get_group_session(RoomID(room_id), SessionID(session_id))
            if session is None:
                raise SessionNotFound(SessionID(session_id), content.get("sender_key"))
            try:
                plaintext, index = session.decrypt(ciphertext)
            except OlmGroupSessionError as e:
                raise DecryptionError("Failed to decrypt megolm event") from e
            if not await store.validate_message_index(
                session.sender_key, SessionID(session_id), EventID(event_id), index, ts
            ):
                raise DuplicateMessageIndex()
            await ratchet_after_decrypt(machine, session, index)
        trust = await self._trust(session, UserID(sender), content.get("device_id"))
        try:
            payload = json.loads(plaintext)
            payload_room, event_type, decrypted = (
                payload["room_id"],
                payload["type"],
                payload["content"],
            )
        except json.JSONDecodeError as e:
            raise DecryptedPayloadError("Failed to parse megolm payload") from e
        except (KeyError, TypeError) as e:
            raise DecryptedPayloadError("Megolm payload is missing fields") from e
        if payload_room != room_id:
            raise MismatchingRoomError()
        if not isinstance(event_type, str) or not isinstance(decrypted, dict):
            raise DecryptionError("undecodable event")
        relates_to = content.get("m.relates_to")
        if relates_to and "m.relates_to" not in decrypted:
            decrypted["m.relates_to"] = relates_to
        event = {
            "room_id": room_id,
            "event_id": event_id,
            "sender": sender,
            "origin_server_ts": ts,
            "type": event_type,
            "content": decrypted,
        }
        # What mautrix cannot read stays unread (decryption.failed), as before: its parse of
        # a copy is the check (it changes what it reads); the dict itself is what we return.
        copied = json.loads(plaintext)["content"]
        if relates_to and "m.relates_to" not in copied:
            copied["m.relates_to"] = copy.deepcopy(relates_to)
        try:
            Event.deserialize(cast(JSON, {**event, "content": copied}))
        except Exception as e:
            raise DecryptionError(f"undecodable event ({type(e).__name__})") from None
        if isinstance(raw.get("unsigned"), dict):
            event["unsigned"] = raw["unsigned"]
        return event, trust

    async def _trust(self, session: Any, sender: UserID, device_id: Any) -> TrustState:
        """mautrix's rule: our own device's session is verified; otherwise the device that
        holds the session's keys (or, for a forwarded key, the device that forwarded it)."""
        machine, account = self.machine, self.machine.account
        chain: list[IdentityKey] = session.forwarding_chain
        if (
            device_id == machine.client.device_id
            and account is not None
            and session.signing_key == account.signing_key
            and session.sender_key == account.identity_key
            and not chain
        ):
            return TrustState.VERIFIED
        device = await machine.get_or_fetch_device_by_key(sender, session.sender_key)
        if not chain or (len(chain) == 1 and chain[0] == session.sender_key):
            if not device:
                return TrustState.UNKNOWN_DEVICE
            if (
                device.signing_key != session.signing_key
                or device.identity_key != session.sender_key
            ):
                raise VerificationError()
            return await machine.resolve_trust(device)
        received_from = await machine.crypto_store.find_device_by_key(sender, chain[-1])
        if received_from:
            return await machine.resolve_trust(received_from)
        return TrustState.FORWARDED


def _envelope(raw: dict[str, Any]) -> tuple[str, str, str, int, dict[str, Any]]:
    """The encrypted event's room, ID, sender, time and content, each of its type."""
    room_id, event_id, sender = raw.get("room_id"), raw.get("event_id"), raw.get("sender")
    ts, content = raw.get("origin_server_ts"), raw.get("content")
    if (
        not isinstance(room_id, str)
        or not isinstance(event_id, str)
        or not isinstance(sender, str)
        or not isinstance(ts, int)
        or isinstance(ts, bool)
        or not isinstance(content, dict)
    ):
        raise DecryptionError("undecodable event")
    if "m.relates_to" in content:
        try:
            RelatesTo.deserialize(copy.deepcopy(content["m.relates_to"]))
        except Exception as e:
            raise DecryptionError(f"undecodable event ({type(e).__name__})") from None
    return room_id, event_id, sender, ts, content
