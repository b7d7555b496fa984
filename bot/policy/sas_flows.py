"""Routing verification messages to their flow, bounding how many are open, expiring them.

Pure like bot.policy.sas: the caller decides who may verify (an async role look-up) between
`classify` and `open_*`, passes "now", and carries out the returned steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.policy.sas import (
    CANCEL,
    DONE,
    FINAL,
    MAX_AGE_SECONDS,
    MAX_FLOWS,
    MAX_FUTURE_SECONDS,
    READY,
    REASONS,
    REQUEST,
    SAS_V1,
    START,
    TIMEOUT_SECONDS,
    TYPES,
    Code,
    Inbound,
    Outgoing,
    Party,
    SasCrypto,
    SasFlow,
    State,
    Step,
)
from bot.policy.sas_content import MAX_ID, Invalid, _str, _strs

KEEP_ENDED_SECONDS = 120.0  # an ended flow is remembered this long: late echoes stay quiet
REFUSAL_INTERVAL_SECONDS = 60.0  # one answered (and audited) refusal per user per minute
MAX_REFUSALS_TRACKED = 1000


class Kind(StrEnum):
    FLOW = "flow"  # belongs to an open (or just ended) flow: `flow.receive` it
    NEW = "new"  # a request, or a start with no request: the caller checks the sender's role
    ANSWER = "answer"  # answered without a flow (the step holds the cancel)
    IGNORE = "ignore"


@dataclass
class Route:
    kind: Kind
    txn: str = ""
    step: Step | None = None
    flow: SasFlow | None = None
    reason: str = ""
    from_device: str = ""


def transaction_of(msg: Inbound) -> str:
    """The flow a message belongs to: the to-device `transaction_id`; in a room, the request
    event (its own ID for the request, else the `m.reference` it relates to)."""
    content = msg.content
    if not isinstance(content, dict):
        raise Invalid("content")
    if msg.room_id is None:
        return _str(content, "transaction_id")
    if msg.type == REQUEST:
        if not isinstance(msg.event_id, str) or not msg.event_id or len(msg.event_id) > MAX_ID:
            raise Invalid("event_id")
        return msg.event_id
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict) or relates.get("rel_type") != "m.reference":
        raise Invalid("m.relates_to")
    return _str(relates, "event_id")


def _cancel_to(msg: Inbound, txn: str, code: Code, device: str = "*") -> Outgoing:
    """A cancel for a message that has no flow of ours (to-device only)."""
    return Outgoing(
        CANCEL,
        {"code": code.value, "reason": REASONS[code], "transaction_id": txn},
        None,
        msg.sender,
        device,
    )


class SasFlows:
    """Every flow of this bot, keyed by transaction (or request event) ID."""

    def __init__(self, us: Party, max_flows: int = MAX_FLOWS) -> None:
        self.us = us
        self.max_flows = max_flows
        self.flows: dict[str, SasFlow] = {}
        self._ended_at: dict[str, float] = {}
        self._refused: dict[str, float] = {}

    def open_count(self) -> int:
        return sum(1 for f in self.flows.values() if f.state not in FINAL)

    def classify(self, msg: Inbound, now: float, now_ms: int) -> Route:
        """Where a message goes. Never raises on content: hostile input is a route too."""
        if msg.type not in TYPES:
            return Route(Kind.IGNORE, reason="not a verification type")
        if msg.sender == self.us.user_id:
            return Route(Kind.IGNORE, reason="our own message")
        try:
            txn = transaction_of(msg)
        except Invalid:
            return Route(Kind.IGNORE, reason="no transaction")  # nothing to answer to
        flow = self.flows.get(txn)
        if flow is not None:
            return self._for_flow(msg, txn, flow)
        if msg.type == REQUEST:
            return self._new_request(msg, txn, now_ms)
        if msg.type == START and msg.room_id is None:
            return self._new_start(msg, txn)
        if msg.type in (CANCEL, DONE) or msg.room_id is not None:
            # Never answer a cancel or a done; in a room, other people's verifications
            # relate to requests that are not ours.
            return Route(Kind.IGNORE, txn, reason="unknown transaction")
        return self._refusal(msg, txn, Code.UNKNOWN_TRANSACTION, now)

    def _for_flow(self, msg: Inbound, txn: str, flow: SasFlow) -> Route:
        if msg.sender != flow.peer_user:
            if msg.room_id is not None:
                # Anyone in the room can relate to the request: a cancel there would end the
                # real flow for everyone, so a stranger's event is only ignored.
                return Route(Kind.IGNORE, txn, reason="another user in the room")
            step = Step(send=[_cancel_to(msg, txn, Code.USER_MISMATCH)])
            return Route(Kind.ANSWER, txn, step, reason="user mismatch")
        content = msg.content if isinstance(msg.content, dict) else {}
        device = content.get("from_device")
        if (
            msg.type == READY
            and flow.peer_device is not None
            and isinstance(device, str)
            and device != flow.peer_device
            and flow.state is not State.REQUESTED
        ):
            # Another device of theirs answered our request after the first one did.
            if msg.room_id is not None:
                return Route(Kind.IGNORE, txn, reason="ready from another device")
            step = Step(send=[_cancel_to(msg, txn, Code.ACCEPTED, device[:MAX_ID])])
            return Route(Kind.ANSWER, txn, step, reason="accepted elsewhere")
        return Route(Kind.FLOW, txn, flow=flow)

    def _new_request(self, msg: Inbound, txn: str, now_ms: int) -> Route:
        content = msg.content
        try:
            device = _str(content, "from_device")
            methods = _strs(content, "methods")
            if msg.room_id is None:
                sent_ms = content.get("timestamp")
            else:
                sent_ms = msg.ts_ms
                if content.get("to") != self.us.user_id:
                    return Route(Kind.IGNORE, txn, reason="request for someone else")
            if not isinstance(sent_ms, int) or isinstance(sent_ms, bool):
                raise Invalid("timestamp")
        except Invalid:
            return Route(Kind.IGNORE, txn, reason="malformed request")
        age = (now_ms - sent_ms) / 1000
        if age > MAX_AGE_SECONDS or -age > MAX_FUTURE_SECONDS:
            return Route(Kind.IGNORE, txn, reason="stale request")  # spec: ignore, no answer
        if SAS_V1 not in methods:
            return Route(Kind.NEW, txn, reason="unknown method", from_device=device)
        return Route(Kind.NEW, txn, from_device=device)

    def _new_start(self, msg: Inbound, txn: str) -> Route:
        try:
            device = _str(msg.content, "from_device")
        except Invalid:
            return Route(Kind.IGNORE, txn, reason="malformed start")
        return Route(Kind.NEW, txn, from_device=device)

    def _refusal(self, msg: Inbound, txn: str, code: Code, now: float) -> Route:
        """Answer a stranger at most once a minute, so a flood costs us nothing much."""
        last = self._refused.get(msg.sender)
        if last is not None and now - last < REFUSAL_INTERVAL_SECONDS:
            return Route(Kind.IGNORE, txn, reason=f"{code.value} (rate limited)")
        if len(self._refused) >= MAX_REFUSALS_TRACKED:
            self._refused = {u: t for u, t in self._refused.items() if now - t < 60}
            if len(self._refused) >= MAX_REFUSALS_TRACKED:
                return Route(Kind.IGNORE, txn, reason=f"{code.value} (rate limited)")
        self._refused[msg.sender] = now
        return Route(Kind.ANSWER, txn, Step(send=[_cancel_to(msg, txn, code)]), reason=code.value)

    def refuse(self, msg: Inbound, route: Route, code: Code, now: float) -> Route:
        """A new flow we do not take on (not allowed, no method in common, too many): a cancel
        for it, rate limited per sender. In a room the cancel relates to their request."""
        if msg.room_id is None:
            return self._refusal(msg, route.txn, code, now)
        answered = self._refusal(msg, route.txn, code, now)
        if answered.kind is not Kind.ANSWER:
            return answered
        content = {
            "code": code.value,
            "reason": REASONS[code],
            "m.relates_to": {"rel_type": "m.reference", "event_id": route.txn},
        }
        step = Step(send=[Outgoing(CANCEL, content, msg.room_id, msg.sender)])
        return Route(Kind.ANSWER, route.txn, step, reason=code.value)

    def open_incoming(
        self,
        msg: Inbound,
        route: Route,
        crypto: SasCrypto,
        now: float,
        our_keys: Mapping[str, str],
    ) -> tuple[SasFlow | None, Step]:
        """Take on the peer's request (answered with ready) or bare start (with accept).
        The newest request of a user supersedes their older open flow."""
        step = Step()
        for old in [f for f in self.flows.values() if f.peer_user == msg.sender]:
            if old.state not in FINAL:
                step.send += old.cancel(Code.USER).send
                self._ended_at[old.txn] = now
        if self.open_count() >= self.max_flows:
            refused = self.refuse(msg, route, Code.USER, now)
            return None, refused.step or step
        flow = SasFlow(
            txn=route.txn,
            us=self.us,
            peer_user=msg.sender,
            peer_device=route.from_device,
            crypto=crypto,
            now=now,
            room_id=msg.room_id,
            our_keys=our_keys,
        )
        self.flows[route.txn] = flow
        if msg.type == REQUEST:
            answer = flow.ready()
        else:
            answer = flow.receive(msg, now)
        answer.send = step.send + answer.send
        answer.started = answer.started or flow.state not in FINAL
        return flow, answer

    def open_outgoing(
        self,
        txn: str,
        peer_user: str,
        peer_device: str | None,
        crypto: SasCrypto,
        now: float,
        our_keys: Mapping[str, str],
        room_id: str | None = None,
    ) -> SasFlow | None:
        """Our request (sent by the caller); None when too many flows are open."""
        if self.open_count() >= self.max_flows or txn in self.flows:
            return None
        flow = SasFlow(
            txn=txn,
            us=self.us,
            peer_user=peer_user,
            peer_device=peer_device,
            crypto=crypto,
            now=now,
            room_id=room_id,
            our_keys=our_keys,
            we_requested=True,
        )
        self.flows[txn] = flow
        return flow

    def ended(self, flow: SasFlow, now: float) -> None:
        """Note that a flow ended (kept a while, then forgotten by `expire`)."""
        self._ended_at.setdefault(flow.txn, now)

    def expire(self, now: float) -> list[tuple[SasFlow, Step]]:
        """Cancel flows past their deadline (m.timeout); forget flows that ended a while ago."""
        out = []
        for flow in list(self.flows.values()):
            if flow.expired(now):
                out.append((flow, flow.cancel(Code.TIMEOUT)))
                self._ended_at[flow.txn] = now
            elif flow.state in FINAL:
                self._ended_at.setdefault(flow.txn, now)
        for txn, at in list(self._ended_at.items()):
            if now - at >= KEEP_ENDED_SECONDS:
                self.flows.pop(txn, None)
                del self._ended_at[txn]
        return out

    def find(self, predicate: Callable[[SasFlow], bool]) -> SasFlow | None:
        return next((f for f in self.flows.values() if predicate(f)), None)


def describe(content: Any) -> dict[str, Any]:
    """Shape of a content for a log line: key names only, never values."""
    if not isinstance(content, dict):
        return {"type": type(content).__name__}
    return {"keys": sorted(str(k)[:40] for k in list(content)[:20])}


__all__ = ["TIMEOUT_SECONDS", "Kind", "Route", "SasFlows", "describe", "transaction_of"]
