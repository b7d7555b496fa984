"""SAS interactive verification (`m.sas.v1`) as a pure state machine.

One `SasFlow` per transaction; `SasFlows` routes what arrives, bounds how many flows are open,
and expires them. Nothing here does I/O: the elliptic-curve and MAC work is a `SasCrypto` the
caller passes in (python-olm's `olm.Sas` in bot.matrix.verification), "now" is passed in, and
every decision comes back as a `Step` (messages to send, the short code to show, the outcome).
The emoji table, the short code, the commitment and the content checks are in
bot.policy.sas_content (re-exported here).

Everything that arrives is untrusted: contents are checked field by field, sizes are bounded,
and anything malformed, out of order or unexpected cancels the flow with the spec's code.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bot.policy.sas_content import EMOJI as EMOJI  # re-exported for callers of this module
from bot.policy.sas_content import (
    MAX_ID,
    MAX_KEY,
    MAX_LIST,
    Invalid,
    ShortCode,
    _str,
    _strs,
    commitment,
    short_code,
)
from bot.policy.sas_content import canonical_json as canonical_json

SAS_V1 = "m.sas.v1"
KEY_AGREEMENT = "curve25519-hkdf-sha256"
HASH = "sha256"
MAC_V2 = "hkdf-hmac-sha256.v2"
MAC_V1 = "hkdf-hmac-sha256"  # libolm's base64 quirk; older clients only offer this one
MACS = (MAC_V2, MAC_V1)  # in order of preference
SAS_TYPES = ("decimal", "emoji")  # decimal is mandatory in the spec

PREFIX = "m.key.verification."
REQUEST, READY, START = PREFIX + "request", PREFIX + "ready", PREFIX + "start"
ACCEPT, KEY, MAC = PREFIX + "accept", PREFIX + "key", PREFIX + "mac"
DONE, CANCEL = PREFIX + "done", PREFIX + "cancel"
TYPES = frozenset({REQUEST, READY, START, ACCEPT, KEY, MAC, DONE, CANCEL})

TIMEOUT_SECONDS = 600.0  # a request, and a flow from its start: 10 minutes (spec)
MAX_AGE_SECONDS = 600.0  # a request older than this is ignored (spec)
MAX_FUTURE_SECONDS = 300.0  # ... and one from more than 5 minutes in the future
MAX_FLOWS = 32  # open flows at once; more are refused
MAX_FLOWS_PER_USER = 2
MAX_REASON = 200


class Code(StrEnum):
    """The spec's cancellation codes."""

    USER = "m.user"
    TIMEOUT = "m.timeout"
    UNKNOWN_TRANSACTION = "m.unknown_transaction"
    UNKNOWN_METHOD = "m.unknown_method"
    UNEXPECTED_MESSAGE = "m.unexpected_message"
    KEY_MISMATCH = "m.key_mismatch"
    USER_MISMATCH = "m.user_mismatch"
    INVALID_MESSAGE = "m.invalid_message"
    ACCEPTED = "m.accepted"
    MISMATCHED_COMMITMENT = "m.mismatched_commitment"
    MISMATCHED_SAS = "m.mismatched_sas"


REASONS = {
    Code.USER: "Cancelled",
    Code.TIMEOUT: "The verification took too long",
    Code.UNKNOWN_TRANSACTION: "Unknown transaction",
    Code.UNKNOWN_METHOD: "No method in common",
    Code.UNEXPECTED_MESSAGE: "Unexpected message",
    Code.KEY_MISMATCH: "Key mismatch",
    Code.USER_MISMATCH: "User mismatch",
    Code.INVALID_MESSAGE: "Invalid message",
    Code.ACCEPTED: "Accepted by another device",
    Code.MISMATCHED_COMMITMENT: "Mismatched commitment",
    Code.MISMATCHED_SAS: "Mismatched short authentication string",
}


class State(StrEnum):
    REQUESTED = "requested"  # a request is out (ours or theirs), no ready yet
    READY = "ready"  # ready exchanged, waiting for a start
    STARTED = "started"  # we sent start, waiting for accept
    ACCEPTED = "accepted"  # start and accept exchanged, keys not both in
    KEYS = "keys"  # keys exchanged: the short code waits for the operator
    CONFIRMED = "confirmed"  # the operator confirmed; our MAC is out
    DONE = "done"
    CANCELLED = "cancelled"


FINAL = frozenset({State.DONE, State.CANCELLED})


class SasCrypto(Protocol):
    """The curve25519 exchange and HKDF/HMAC of one flow (olm.Sas in production)."""

    @property
    def public_key(self) -> str: ...

    def set_their_key(self, key: str) -> None: ...

    def generate_bytes(self, info: str, length: int) -> bytes: ...

    def mac(self, method: str, message: str, info: str) -> str: ...


@dataclass(frozen=True)
class Outgoing:
    """A verification message to send: in `room_id` when set, else to-device to `user`'s
    `device` (`*`: every device of theirs, for our to-device request)."""

    type: str
    content: dict[str, Any]
    room_id: str | None = None
    user: str = ""
    device: str = "*"


@dataclass
class Step:
    """What handling one input decided."""

    send: list[Outgoing] = field(default_factory=list)
    started: bool = False  # a new flow was taken on (audit verification.started)
    sas: ShortCode | None = None  # the short code is ready for the operator
    done: bool = False  # both MACs verified: the keys in `verified_keys` are the peer's
    verified_keys: dict[str, str] = field(default_factory=dict)
    cancelled: Code | None = None
    cancelled_by_peer: bool = False
    ignored: str | None = None  # why an input was dropped without an answer (for the log)


@dataclass(frozen=True)
class Party:
    user_id: str
    device_id: str


@dataclass(frozen=True)
class Inbound:
    """A verification message as received: type, sender, untrusted content, and where it came
    from (`room_id` None for to-device). Its IDs are plain `str`, as bot/matrix/verification.py
    reads them from the event; the flows here only compare them."""

    type: str
    sender: str
    content: Any
    room_id: str | None = None
    event_id: str | None = None
    ts_ms: int | None = None  # origin_server_ts of an in-room event


class SasFlow:
    """One verification, either side, to-device or in a room."""

    def __init__(
        self,
        *,
        txn: str,
        us: Party,
        peer_user: str,
        peer_device: str | None,
        crypto: SasCrypto,
        now: float,
        room_id: str | None = None,
        our_keys: Mapping[str, str] | None = None,
        we_requested: bool = False,
    ) -> None:
        self.txn = txn
        self.us = us
        self.peer_user = peer_user
        self.peer_device = peer_device
        self.crypto = crypto
        self.room_id = room_id
        self.our_keys = dict(our_keys or {})  # key ID -> public key we want the peer to trust
        self.their_keys: dict[str, str] | None = None  # set by the caller before a MAC
        self.we_requested = we_requested
        self.state = State.REQUESTED
        self.deadline = now + TIMEOUT_SECONDS
        self.we_started = False
        self.start_content: dict[str, Any] | None = None
        self.mac_method = MAC_V2
        self.sas_methods: tuple[str, ...] = ()
        self.their_commitment: str | None = None
        self.their_key: str | None = None
        self.our_key_sent = False
        self.their_mac_ok = False
        self.their_verified: dict[str, str] = {}
        self.code: ShortCode | None = None
        self.cancel_code: Code | None = None

    # -- messages out -----------------------------------------------------------------------

    def _content(self, **fields: Any) -> dict[str, Any]:
        if self.room_id is not None:
            fields["m.relates_to"] = {"rel_type": "m.reference", "event_id": self.txn}
        else:
            fields["transaction_id"] = self.txn
        return fields

    def _out(self, step: Step, type_: str, **fields: Any) -> None:
        step.send.append(self._outgoing(type_, self._content(**fields)))

    def _outgoing(self, type_: str, content: dict[str, Any]) -> Outgoing:
        return Outgoing(type_, content, self.room_id, self.peer_user, self.peer_device or "*")

    def cancel(self, code: Code, step: Step | None = None) -> Step:
        """End the flow and tell the peer why (not done twice)."""
        step = step or Step()
        if self.state in FINAL:
            return step
        self.state = State.CANCELLED
        self.cancel_code = code
        self._out(step, CANCEL, code=code.value, reason=REASONS[code])
        step.cancelled = code
        return step

    def ready(self) -> Step:
        """Answer the peer's request (the caller decided the peer may verify with us)."""
        step = Step(started=True)
        self.state = State.READY
        self._out(step, READY, from_device=self.us.device_id, methods=[SAS_V1])
        return step

    def request_content(self, ts_ms: int) -> dict[str, Any]:
        """Our to-device request (an in-room request is a message the caller sends)."""
        return {
            "from_device": self.us.device_id,
            "methods": [SAS_V1],
            "timestamp": ts_ms,
            "transaction_id": self.txn,
        }

    def _start(self, step: Step, now: float) -> None:
        content = self._content(
            from_device=self.us.device_id,
            method=SAS_V1,
            key_agreement_protocols=[KEY_AGREEMENT],
            hashes=[HASH],
            message_authentication_codes=list(MACS),
            short_authentication_string=list(SAS_TYPES),
        )
        self.start_content = content
        self.we_started = True
        self.state = State.STARTED
        self.deadline = now + TIMEOUT_SECONDS
        step.send.append(self._outgoing(START, content))

    # -- the operator -----------------------------------------------------------------------

    def confirm(self) -> Step:
        """The operator saw the same short code: send our MAC (and finish if theirs is in)."""
        step = Step()
        if self.state is not State.KEYS:
            step.ignored = f"cannot confirm in state {self.state.value}"
            return step
        self.state = State.CONFIRMED
        info = self._mac_info(self.us, Party(self.peer_user, self._device()))
        macs = {
            key_id: self.crypto.mac(self.mac_method, key, info + key_id)
            for key_id, key in sorted(self.our_keys.items())
        }
        keys = self.crypto.mac(self.mac_method, ",".join(sorted(macs)), info + "KEY_IDS")
        self._out(step, MAC, mac=macs, keys=keys)
        if self.their_mac_ok:
            self._finish(step)
        return step

    def _finish(self, step: Step) -> None:
        self.state = State.DONE
        self._out(step, DONE)
        step.done = True
        step.verified_keys = dict(self.their_verified)

    # -- messages in ------------------------------------------------------------------------

    def expired(self, now: float) -> bool:
        return self.state not in FINAL and now >= self.deadline

    def receive(self, msg: Inbound, now: float) -> Step:
        """Handle one message that belongs to this flow (the router matched its transaction)."""
        if self.state in FINAL:
            return Step(ignored="flow already ended")
        if msg.sender != self.peer_user:
            return self.cancel(Code.USER_MISMATCH)
        if msg.type == CANCEL:
            return self._on_cancel(msg.content)
        if self.expired(now):
            return self.cancel(Code.TIMEOUT)
        content = msg.content
        try:
            handler = {
                READY: self._on_ready,
                START: self._on_start,
                ACCEPT: self._on_accept,
                KEY: self._on_key,
                MAC: self._on_mac,
                DONE: self._on_done,
            }.get(msg.type)
            if handler is None:  # a second request on the same transaction
                return self.cancel(Code.UNEXPECTED_MESSAGE)
            return handler(content, now)
        except Invalid:
            return self.cancel(Code.INVALID_MESSAGE)

    def _on_cancel(self, content: Any) -> Step:
        code = content.get("code") if isinstance(content, dict) else None
        try:
            parsed = Code(str(code))
        except ValueError:
            parsed = Code.USER  # an unknown or missing code still ends the flow
        self.state = State.CANCELLED
        self.cancel_code = parsed
        return Step(cancelled=parsed, cancelled_by_peer=True)

    def _device(self) -> str:
        return self.peer_device or ""

    def _check_device(self, content: Mapping[str, Any]) -> str:
        device = _str(content, "from_device")
        if self.peer_device is not None and device != self.peer_device:
            raise _Mismatch
        return device

    def _on_ready(self, content: Any, now: float) -> Step:
        if not isinstance(content, dict):
            raise Invalid("content")
        if self.state is not State.REQUESTED or not self.we_requested:
            return self.cancel(Code.UNEXPECTED_MESSAGE)
        try:
            self.peer_device = self._check_device(content)
        except _Mismatch:
            return self.cancel(Code.USER_MISMATCH)
        if SAS_V1 not in _strs(content, "methods"):
            return self.cancel(Code.UNKNOWN_METHOD)
        step = Step()
        self.state = State.READY
        self._start(step, now)  # we asked, so we drive: start at once
        return step

    def _on_start(self, content: Any, now: float) -> Step:
        if not isinstance(content, dict):
            raise Invalid("content")
        if self.state is State.STARTED and self.start_content is not None:
            # Both sides started: the start from the lower (user, device) wins (spec).
            device = _str(content, "from_device")
            if (self.us.user_id, self.us.device_id) < (self.peer_user, device):
                return Step(ignored="simultaneous start: ours wins")
            self.we_started = False
            self.start_content = None
        elif self.state not in (State.REQUESTED, State.READY) or (
            self.state is State.REQUESTED and self.we_requested
        ):
            return self.cancel(Code.UNEXPECTED_MESSAGE)
        try:
            self.peer_device = self._check_device(content)
        except _Mismatch:
            return self.cancel(Code.USER_MISMATCH)
        if _str(content, "method") != SAS_V1:
            return self.cancel(Code.UNKNOWN_METHOD)
        agreements = _strs(content, "key_agreement_protocols")
        hashes = _strs(content, "hashes")
        macs = _strs(content, "message_authentication_codes")
        sas_types = _strs(content, "short_authentication_string")
        mac = next((m for m in MACS if m in macs), None)
        chosen = tuple(t for t in SAS_TYPES if t in sas_types)
        if KEY_AGREEMENT not in agreements or HASH not in hashes or mac is None or not chosen:
            return self.cancel(Code.UNKNOWN_METHOD)
        step = Step(started=self.state is State.REQUESTED)  # a start with no request before
        self.mac_method, self.sas_methods = mac, chosen
        self.start_content = dict(content)
        self.state = State.ACCEPTED
        self.deadline = now + TIMEOUT_SECONDS
        self._out(
            step,
            ACCEPT,
            method=SAS_V1,
            key_agreement_protocol=KEY_AGREEMENT,
            hash=HASH,
            message_authentication_code=mac,
            short_authentication_string=list(chosen),
            commitment=commitment(self.crypto.public_key, content),
        )
        return step

    def _on_accept(self, content: Any, now: float) -> Step:
        if not isinstance(content, dict):
            raise Invalid("content")
        if self.state is not State.STARTED:
            return self.cancel(Code.UNEXPECTED_MESSAGE)
        agreement = _str(content, "key_agreement_protocol")
        hash_ = _str(content, "hash")
        mac = _str(content, "message_authentication_code")
        sas_types = _strs(content, "short_authentication_string")
        self.their_commitment = _str(content, "commitment", MAX_KEY)
        if (
            agreement != KEY_AGREEMENT
            or hash_ != HASH
            or mac not in MACS
            or not sas_types
            or not set(sas_types) <= set(SAS_TYPES)
        ):
            return self.cancel(Code.UNKNOWN_METHOD)
        self.mac_method, self.sas_methods = mac, tuple(sas_types)
        self.state = State.ACCEPTED
        step = Step()
        self._out(step, KEY, key=self.crypto.public_key)
        self.our_key_sent = True
        return step

    def _on_key(self, content: Any, now: float) -> Step:
        if not isinstance(content, dict):
            raise Invalid("content")
        if self.state is not State.ACCEPTED or self.their_key is not None:
            return self.cancel(Code.UNEXPECTED_MESSAGE)
        if self.we_started and not self.our_key_sent:
            return self.cancel(Code.UNEXPECTED_MESSAGE)
        key = _str(content, "key", MAX_KEY)
        step = Step()
        if self.we_started:
            assert self.start_content is not None
            expected = self.their_commitment or ""
            if not hmac.compare_digest(commitment(key, self.start_content), expected):
                return self.cancel(Code.MISMATCHED_COMMITMENT)
        try:
            self.crypto.set_their_key(key)
        except ValueError:
            return self.cancel(Code.INVALID_MESSAGE)
        self.their_key = key
        if not self.we_started:
            self._out(step, KEY, key=self.crypto.public_key)
            self.our_key_sent = True
        self.code = short_code(self.crypto.generate_bytes(self._sas_info(), 6))
        self.state = State.KEYS
        step.sas = self.code
        return step

    def _on_mac(self, content: Any, now: float) -> Step:
        if not isinstance(content, dict):
            raise Invalid("content")
        if self.state not in (State.KEYS, State.CONFIRMED) or self.their_mac_ok:
            return self.cancel(Code.UNEXPECTED_MESSAGE)
        macs = content.get("mac")
        keys = _str(content, "keys", MAX_KEY)
        if not isinstance(macs, dict) or not macs or len(macs) > MAX_LIST:
            raise Invalid("mac")
        for key_id, value in macs.items():
            if not isinstance(key_id, str) or len(key_id) > MAX_ID:
                raise Invalid("mac")
            if not isinstance(value, str) or len(value) > MAX_KEY:
                raise Invalid("mac")
        if self.their_keys is None:
            return Step(ignored="peer keys not loaded")  # caller bug; never verify blind
        info = self._mac_info(Party(self.peer_user, self._device()), self.us)
        expected_keys = self.crypto.mac(self.mac_method, ",".join(sorted(macs)), info + "KEY_IDS")
        if not hmac.compare_digest(expected_keys, keys):
            return self.cancel(Code.KEY_MISMATCH)
        verified: dict[str, str] = {}
        for key_id, value in macs.items():
            key = self.their_keys.get(key_id)
            if key is None:
                continue  # a key we do not know (e.g. a master key the server did not give)
            if not hmac.compare_digest(
                self.crypto.mac(self.mac_method, key, info + key_id), value
            ):
                return self.cancel(Code.KEY_MISMATCH)
            verified[key_id] = key
        if f"ed25519:{self._device()}" not in verified:
            return self.cancel(Code.KEY_MISMATCH)  # the device's own key must be among them
        self.their_mac_ok = True
        self.their_verified = verified
        step = Step()
        if self.state is State.CONFIRMED:
            self._finish(step)
        return step

    def _on_done(self, content: Any, now: float) -> Step:
        # Their done before our MAC went out (or theirs came in) is out of order.
        return self.cancel(Code.UNEXPECTED_MESSAGE)

    # -- info strings (spec: SAS and MAC key derivation) ------------------------------------

    def _sas_info(self) -> str:
        us = f"{self.us.user_id}|{self.us.device_id}|{self.crypto.public_key}"
        them = f"{self.peer_user}|{self._device()}|{self.their_key}"
        first, second = (us, them) if self.we_started else (them, us)
        return f"MATRIX_KEY_VERIFICATION_SAS|{first}|{second}|{self.txn}"

    def _mac_info(self, sender: Party, receiver: Party) -> str:
        return (
            "MATRIX_KEY_VERIFICATION_MAC"
            f"{sender.user_id}{sender.device_id}{receiver.user_id}{receiver.device_id}{self.txn}"
        )


class _Mismatch(Exception):
    pass
