"""Matrix side of interactive verification: olm.Sas, sending the messages (to-device and
in-room), the keys on both sides, cross-signing the verified user, and the trust it gives."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from mautrix.api import Method, Path
from mautrix.crypto import OlmMachine
from mautrix.crypto.signature import sign_olm
from mautrix.types import (
    CrossSigner,
    CrossSigningKeys,
    CrossSigningUsage,
    DeviceID,
    DeviceIdentity,
    EventType,
    KeyID,
    RoomID,
    SigningKey,
    TrustState,
    UserID,
)
from olm.sas import OlmSasError, Sas

from bot.batch_scope import once_per_batch
from bot.matrix.crypto_store import TRUST
from bot.matrix.gateway import MatrixGateway
from bot.policy.sas import CANCEL, MAC_V2, REQUEST, SAS_V1, TYPES, Inbound, Outgoing, SasFlow

log = logging.getLogger("chaperone.verification")


class SignatureRefused(Exception):
    """The homeserver answered a signature upload with `failures`."""


class OlmSasCrypto:
    """`bot.policy.sas.SasCrypto` over python-olm's `olm.Sas` (one per flow)."""

    def __init__(self) -> None:
        self._sas = Sas()

    @property
    def public_key(self) -> str:
        return str(self._sas.pubkey)

    def set_their_key(self, key: str) -> None:
        try:
            self._sas.set_their_pubkey(key)
        except OlmSasError as e:
            raise ValueError("not a curve25519 key") from e

    def generate_bytes(self, info: str, length: int) -> bytes:
        return bytes(self._sas.generate_bytes(info, length))

    def mac(self, method: str, message: str, info: str) -> str:
        if method == MAC_V2:
            return str(self._sas.calculate_mac_fixed_base64(message, info))
        return str(self._sas.calculate_mac(message, info))  # hkdf-hmac-sha256: libolm's base64


def inbound_from_room_event(raw: dict[str, Any]) -> Inbound | None:
    """An in-room verification event (sent in the clear by Element, or decrypted): the request
    is an `m.room.message` with that msgtype; the rest have their own types."""
    type_ = raw.get("type")
    content = raw.get("content")
    if not isinstance(content, dict):
        return None
    if type_ == "m.room.message":
        if content.get("msgtype") != REQUEST:
            return None
        type_ = REQUEST
    elif type_ not in TYPES or type_ == REQUEST:
        return None
    sender, room_id, event_id, ts = (
        raw.get("sender"),
        raw.get("room_id"),
        raw.get("event_id"),
        raw.get("origin_server_ts"),
    )
    if not isinstance(sender, str) or not isinstance(room_id, str):
        return None
    return Inbound(
        type=str(type_),
        sender=sender,
        content=content,
        room_id=room_id,
        event_id=event_id if isinstance(event_id, str) else None,
        ts_ms=ts if isinstance(ts, int) else None,
    )


def inbound_from_to_device(evt: Any) -> Inbound | None:
    """A to-device verification event as mautrix dispatched it (clear or olm-decrypted)."""
    try:
        type_ = str(evt.type.t if hasattr(evt.type, "t") else evt.type)
        content = evt.content.serialize() if hasattr(evt.content, "serialize") else evt.content
        sender = str(evt.sender)
    except Exception:
        return None
    if type_ not in TYPES or not isinstance(content, dict):
        return None
    return Inbound(type=type_, sender=sender, content=content)


class VerificationMatrix:
    """What a verification needs from the homeserver and the crypto machine."""

    def __init__(self, gateway: MatrixGateway) -> None:
        self.gateway = gateway

    @property
    def machine(self) -> OlmMachine:
        assert self.gateway.machine is not None
        return self.gateway.machine

    def listen(self, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Hand every to-device verification event to `handler`."""
        for type_ in TYPES:
            self.gateway.client.add_event_handler(
                EventType.find(type_, EventType.Class.TO_DEVICE), handler
            )

    async def send(self, out: Outgoing) -> str | None:
        """Send one message; returns the event ID of an in-room one. In-room verification
        events go out in the clear, as Element sends them (they hold no secret)."""
        client = self.gateway.client
        if out.room_id is not None:
            event_type = (
                EventType.ROOM_MESSAGE
                if out.type == REQUEST
                else EventType.find(out.type, EventType.Class.MESSAGE)
            )
            event_id = await client.send_message_event(
                RoomID(out.room_id), event_type, cast(Any, out.content), disable_encryption=True
            )
            return str(event_id)
        await client.send_to_device(
            EventType.find(out.type, EventType.Class.TO_DEVICE),
            {UserID(out.user): {DeviceID(out.device): cast(Any, out.content)}},
        )
        return None

    async def send_room_request(self, room_id: str, peer_user: str) -> str:
        """Our in-room request (a message); its event ID is the flow's transaction."""
        content = {
            "msgtype": REQUEST,
            "body": f"{self.gateway.user_id} is asking to verify your key; your client does not"
            " support in-chat key verification.",
            "from_device": self.gateway.device_id,
            "methods": [SAS_V1],
            "to": peer_user,
        }
        event_id = await self.send(Outgoing(REQUEST, content, room_id, peer_user))
        assert event_id is not None
        return event_id

    async def send_to_device_request(self, flow: SasFlow, now_ms: int) -> None:
        """Our to-device request: to the named device, or to every device of the user."""
        content = flow.request_content(now_ms)
        await self.send(Outgoing(REQUEST, content, None, flow.peer_user, flow.peer_device or "*"))

    def our_keys(self) -> dict[str, str]:
        """The keys our MAC vouches for: this device's ed25519 key, and our master key."""
        account = self.machine.account
        assert account is not None
        keys = {f"ed25519:{self.gateway.device_id}": str(account.signing_key)}
        public = self.machine._cross_signing_public_keys
        if public is not None:
            keys[f"ed25519:{public.master_key}"] = str(public.master_key)
        return keys

    async def their_keys(self, user_id: str, device_id: str) -> dict[str, str]:
        """The peer device's ed25519 key and the user's master key, as the server gave them."""
        keys: dict[str, str] = {}
        device = await self.machine.get_or_fetch_device(UserID(user_id), DeviceID(device_id))
        if device is not None:
            keys[f"ed25519:{device_id}"] = str(device.signing_key)
        public = await self.machine.get_cross_signing_public_keys(UserID(user_id))
        if public is not None:
            keys[f"ed25519:{public.master_key}"] = str(public.master_key)
        return keys

    async def sign_master_key(self, user_id: str, master_key: str) -> bool:
        """Sign the user's (SAS-verified) master key with our user-signing key and publish the
        signature; False when we hold no user-signing key (no recovery key configured);
        `SignatureRefused` when the server does not take it (then nothing is trusted by it)."""
        private = self.machine._cross_signing_private_keys
        if private is None:
            return False
        usk = private.user_signing_key
        keys = CrossSigningKeys(
            user_id=UserID(user_id),
            usage=[CrossSigningUsage.MASTER],
            keys={KeyID.ed25519(SigningKey(master_key)): SigningKey(master_key)},
        )
        signature = sign_olm(keys, usk)
        keys.signatures = {
            self.gateway.user_id: {KeyID.ed25519(SigningKey(usk.public_key)): signature}
        }
        # Not mautrix's upload_one_signature: it ignores the `failures` Synapse answers with
        # (HTTP 200) when it refuses a signature, e.g. when our user-signing key is no longer
        # the account's (reset from another client). A refused signature is not "signed".
        answer = await self.gateway.client.api.request(
            Method.POST,
            Path.v3.keys.signatures.upload,
            {user_id: {master_key: keys.serialize()}},
        )
        if answer.get("failures"):
            raise SignatureRefused("the server refused the signature of the master key")
        await self.machine.crypto_store.put_signature(
            CrossSigner(UserID(user_id), SigningKey(master_key)),
            CrossSigner(self.gateway.user_id, SigningKey(usk.public_key)),
            signature,
        )
        return True

    def install_trust(self, verified_devices: set[tuple[str, str, str]]) -> None:
        """Make mautrix report `verified` (TrustState.VERIFIED) for a device we completed SAS
        with, and for every cross-signed device of a user whose master key we signed.

        mautrix 0.21 never trusts another user's identity (`is_user_trusted` is a stub) and
        resets a device's stored trust whenever its device list is fetched again, so the
        decision is wrapped here, around `resolve_trust`, over `verified_devices` (kept up to
        date by the caller) and the signatures in the crypto store.
        """
        machine = self.machine
        original = machine.resolve_trust
        own_user = self.gateway.user_id

        async def judged(device: DeviceIdentity, allow_fetch: bool) -> tuple[TrustState, bool]:
            """mautrix's verdict, and whether our user-signing key signed the owner's master
            key (asked only for a cross-signed device)."""
            state = await original(device, allow_fetch)
            if state not in (TrustState.CROSS_SIGNED_TOFU, TrustState.CROSS_SIGNED_UNTRUSTED):
                return state, False
            private = machine._cross_signing_private_keys
            public = machine._cross_signing_public_keys
            usk = private.user_signing_key.public_key if private else None
            usk = usk or (public.user_signing_key if public else None)
            theirs = await machine.crypto_store.get_cross_signing_keys(device.user_id)
            master = theirs.get(CrossSigningUsage.MASTER)
            if not (usk and master and device.user_id != own_user):
                return state, False
            signed = await machine.crypto_store.is_key_signed_by(
                target=CrossSigner(device.user_id, master.key),
                signer=CrossSigner(own_user, SigningKey(usk)),
            )
            return state, signed

        async def resolve_trust(device: DeviceIdentity, allow_fetch: bool = True) -> TrustState:
            # Every message of a sender's device asks the same: judged once per batch (the
            # crypto store forgets it when device keys, cross-signing keys or signatures
            # change); a verification finished meanwhile counts at once.
            key = trust_key(device, allow_fetch)
            state, master_signed = await once_per_batch(key, lambda: judged(device, allow_fetch))
            if state in (TrustState.VERIFIED, TrustState.BLACKLISTED):
                return state
            if (str(device.user_id), str(device.device_id), str(device.signing_key)) in (
                verified_devices
            ):
                return TrustState.VERIFIED
            return TrustState.VERIFIED if master_signed else state

        setattr(machine, "resolve_trust", resolve_trust)  # noqa: B010 - instance override


def trust_key(device: DeviceIdentity, allow_fetch: bool) -> tuple[str, ...]:
    """The batch memo key of a device's trust: everything the verdict reads from the device."""
    return (
        TRUST,
        str(device.user_id),
        str(device.device_id),
        str(device.signing_key),
        str(device.identity_key),
        str(device.trust),
        str(allow_fetch),
    )


__all__ = ["CANCEL", "OlmSasCrypto", "SignatureRefused", "VerificationMatrix"]
