"""Interactive verification: message in → route → decide (pure) → send, store, audit.

Verification messages reach one queue (to-device from mautrix's dispatcher, in-room from the
event pipeline as an observer) and one task handles them in order, so the sync never waits on a
verification and no two messages of a flow race. The operator's decision comes from the
`verification` table (`chaperone verify --confirm/--cancel`), polled while a flow waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from mautrix.types import RoomID, UserID

from bot.clock import Clock
from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.unit_of_work import record_audit
from bot.db.verification import VerificationRepo
from bot.matrix.verification import (
    OlmSasCrypto,
    VerificationMatrix,
    inbound_from_room_event,
    inbound_from_to_device,
)
from bot.policy.sas import MAC, Code, Inbound, Party, SasFlow, Step
from bot.policy.sas_flows import Kind, Route, SasFlows
from bot.service.access import AccessService
from bot.service.alerts import Alerts
from bot.service.failures import error_reference
from bot.service.observers import BatchOutcome, Observer

log = logging.getLogger("chaperone.verification")

QUEUE_SIZE = 256  # verification messages waiting to be handled; more are dropped
SEEN_EVENTS = 2000  # in-room event IDs remembered: a retried sync batch is not handled twice
POLL_SECONDS = 1.0


class VerificationService(Observer):
    def __init__(
        self,
        config: Config,
        matrix: VerificationMatrix,
        repo: VerificationRepo,
        audit: AuditLog,
        access: AccessService,
        alerts: Alerts,
        clock: Clock,
    ) -> None:
        self.config = config
        self.matrix = matrix
        self.repo = repo
        self.audit = audit
        self.access = access
        self.alerts = alerts
        self.clock = clock
        self.flows = SasFlows(Party(config.bot.user_id, matrix.gateway.device_id))
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(QUEUE_SIZE)
        self.rows: dict[str, int] = {}  # txn -> verification row, once the code waits
        self.awaiting: dict[int, str] = {}  # row -> txn, while the operator has not decided
        self.began: dict[str, float] = {}  # txn -> monotonic start (for the timings)
        self.verified_devices: set[tuple[str, str, str]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.last_durations: dict[str, float] = {}  # for `status` and the tests

    async def start(self) -> None:
        """Flows of a previous run are gone (keys were in memory); hook the events and trust."""
        expired = await self.repo.expire_open()
        if expired:
            log.info("%d verification(s) of a previous run expired", expired)
        self.verified_devices |= await self.repo.verified_devices()
        self.matrix.install_trust(self.verified_devices)
        self.matrix.listen(self.on_to_device)

    # -- intake (never raises, never blocks the sync) ---------------------------------------

    async def on_to_device(self, evt: Any) -> None:
        msg = inbound_from_to_device(evt)
        if msg is not None:
            self._enqueue(msg)

    async def on_event(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        msg = inbound_from_room_event(raw)
        if msg is None:
            return
        if msg.event_id is not None:
            if msg.event_id in self._seen:
                return
            self._seen[msg.event_id] = None
            while len(self._seen) > SEEN_EVENTS:
                self._seen.popitem(last=False)
        self._enqueue(msg)

    def _enqueue(self, msg: Inbound) -> None:
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("Verification queue full; dropped a %s from %s", msg.type, msg.sender)

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                msg = await asyncio.wait_for(self.queue.get(), POLL_SECONDS)
            except TimeoutError:
                msg = None
            try:
                if msg is not None:
                    await self.handle(msg)
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "Verification handling failed (%s, ref %s)",
                    type(e).__name__,
                    error_reference(),
                )

    def _now(self) -> tuple[float, int]:
        return self.clock.monotonic(), int(self.clock.now().timestamp() * 1000)

    async def handle(self, msg: Inbound) -> None:
        now, now_ms = self._now()
        route = self.flows.classify(msg, now, now_ms)
        if route.kind is Kind.IGNORE:
            log.debug("Ignored a %s from %s: %s", msg.type, msg.sender, route.reason)
            return
        if route.kind is Kind.ANSWER:
            log.info("Answered a %s from %s: %s", msg.type, msg.sender, route.reason)
            await self._send(route.step)
            return
        if route.kind is Kind.NEW:
            await self._new(msg, route, now)
            return
        flow = route.flow
        assert flow is not None
        if msg.type == MAC and flow.their_keys is None and flow.peer_device:
            flow.their_keys = await self.matrix.their_keys(flow.peer_user, flow.peer_device)
        step = flow.receive(msg, self._now()[0])
        if step.ignored:
            log.info("Verification %s: %s ignored (%s)", flow.txn, msg.type, step.ignored)
        await self._process(flow, step, actor=flow.peer_user)

    async def _new(self, msg: Inbound, route: Route, now: float) -> None:
        code = None
        if route.reason == "unknown method":
            code = Code.UNKNOWN_METHOD
        elif not await self.may_verify(UserID(msg.sender)):  # SAS messages carry plain str
            code = Code.USER
        if code is not None:
            refused = self.flows.refuse(msg, route, code, now)
            if refused.kind is Kind.ANSWER:
                await self._send(refused.step)
                await self._audit_cancel(
                    msg.sender,
                    route.from_device,
                    code,
                    by="bot",
                    reason="not_allowed" if code is Code.USER else "unknown_method",
                    room_id=msg.room_id,
                )
            log.info("Refused a verification from %s (%s)", msg.sender, code.value)
            return
        flow, step = self.flows.open_incoming(
            msg, route, OlmSasCrypto(), now, self.matrix.our_keys()
        )
        if flow is None:
            await self._send(step)
            log.warning("Too many verifications open; refused one from %s", msg.sender)
            return
        await self._process(flow, step, actor=msg.sender)

    async def may_verify(self, user_id: UserID) -> bool:
        """Config admins and staff (config or stored), never by room power."""
        return await self.access.may_invite_bot(user_id)

    async def begin(
        self, user_id: UserID, device_id: str | None, room_id: RoomID | None, actor: UserID
    ) -> str:
        """`!chaperone verify @user`: our request, in the room (or to one device)."""
        now, now_ms = self._now()
        crypto = OlmSasCrypto()
        if self.flows.open_count() >= self.flows.max_flows:
            # Checked before the in-room request goes out: a refused flow leaves no request
            # in the room that nobody would ever answer or cancel.
            return self._too_many()
        if room_id is not None:
            txn = await self.matrix.send_room_request(room_id, user_id)
        else:
            txn = secrets.token_urlsafe(18)
        flow = self.flows.open_outgoing(
            txn, user_id, device_id, crypto, now, self.matrix.our_keys(), room_id
        )
        if flow is None:
            return self._too_many()
        if room_id is None:
            await self.matrix.send_to_device_request(flow, now_ms)
        self.began[txn] = now
        await self._audit("verification.started", actor, flow, {"direction": "outgoing"})
        return (
            f"Asked {user_id} to verify"
            + (f" (device {device_id})" if device_id else " (in this room)")
            + "; the operator compares the emoji on the server's console: chaperone verify --list"
        )

    @staticmethod
    def _too_many() -> str:
        return "Too many verifications are open; try again in a few minutes."

    # -- steps ------------------------------------------------------------------------------

    async def _send(self, step: Step | None) -> None:
        for out in step.send if step else []:
            try:
                await self.matrix.send(out)
            except Exception as e:
                log.warning("Could not send a %s to %s (%s)", out.type, out.user, type(e).__name__)

    async def _process(self, flow: SasFlow, step: Step, actor: str) -> None:
        await self._send(step)
        if step.started:
            self.began.setdefault(flow.txn, self.clock.monotonic())
            await self._audit("verification.started", actor, flow, {"direction": "incoming"})
        if step.sas is not None:
            await self._waiting(flow, step)
        if step.done:
            await self._done(flow, step)
        if step.cancelled is not None:
            self.flows.ended(flow, self.clock.monotonic())
            by = "peer" if step.cancelled_by_peer else "bot"
            await self._audit_cancel(
                flow.peer_user, flow.peer_device, step.cancelled, by=by, room_id=flow.room_id
            )
            row = self.rows.pop(flow.txn, None)
            if row is not None:
                self.awaiting.pop(row, None)
                await self.repo.finish(row, "cancelled", cancel_code=step.cancelled.value)

    async def _waiting(self, flow: SasFlow, step: Step) -> None:
        assert step.sas is not None
        remaining = max(0.0, flow.deadline - self.clock.monotonic())
        row = await self.repo.add(
            txn=flow.txn,
            user_id=flow.peer_user,
            device_id=flow.peer_device or "",
            room_id=flow.room_id,
            emoji="  ".join(f"{symbol} {name}" for symbol, name in step.sas.emoji),
            decimals=" ".join(str(d) for d in step.sas.decimals),
            expires_at=self.clock.now() + timedelta(seconds=remaining),
        )
        self.rows[flow.txn] = row
        self.awaiting[row] = flow.txn
        ready_in = self.clock.monotonic() - self.began.get(flow.txn, self.clock.monotonic())
        log.info(
            "Verification %d with %s waits for the operator (%.2f s)",
            row,
            flow.peer_user,
            ready_in,
        )
        await self.alerts.send(
            f"Verification {row} with {flow.peer_user} (device {flow.peer_device}) waits: the"
            f" operator compares the emoji on the server's console (chaperone verify --list)"
            f" and confirms with chaperone verify --confirm {row}."
        )

    async def _done(self, flow: SasFlow, step: Step) -> None:
        self.flows.ended(flow, self.clock.monotonic())
        device_key = step.verified_keys.get(f"ed25519:{flow.peer_device}")
        master = next(
            (k for kid, k in step.verified_keys.items() if kid != f"ed25519:{flow.peer_device}"),
            None,
        )
        signed = False
        if master is not None:
            try:
                signed = await self.matrix.sign_master_key(flow.peer_user, master)
            except Exception as e:
                log.warning(
                    "Could not publish the signature of %s's master key (%s)",
                    flow.peer_user,
                    type(e).__name__,
                )
        if device_key and flow.peer_device:
            self.verified_devices.add((flow.peer_user, flow.peer_device, device_key))
        row = self.rows.pop(flow.txn, None)
        if row is not None:
            await self.repo.finish(row, "done", device_key=device_key, master_key=master)
        began = self.began.pop(flow.txn, None)
        if began is not None:
            self.last_durations[flow.txn] = self.clock.monotonic() - began
        await self._audit(
            "verification.done",
            "system",
            flow,
            {"master_key_signed": signed, "keys_verified": len(step.verified_keys)},
        )
        await self.alerts.send(
            f"Verification with {flow.peer_user} (device {flow.peer_device}) done."
        )

    async def tick(self) -> None:
        """Time out flows; carry out the operator's decisions."""
        now = self.clock.monotonic()
        for expired, step in self.flows.expire(now):
            await self._process(expired, step, actor="system")
        if not self.awaiting:
            return
        for decided in await self.repo.decided(list(self.awaiting)):
            txn = self.awaiting.pop(decided.id)
            flow = self.flows.flows.get(txn)
            if flow is None:
                continue
            if decided.state == "confirmed":
                step = flow.confirm()
                if step.ignored:
                    log.info("Verification %d: %s", decided.id, step.ignored)
                    continue
            else:
                step = flow.cancel(Code.MISMATCHED_SAS)
            await self._process(flow, step, actor=decided.decided_by or "operator")

    # -- audit (never the emoji, keys or MACs) -----------------------------------------------

    async def _audit(self, action: str, actor: str, flow: SasFlow, extra: dict[str, Any]) -> None:
        details = {
            "device": flow.peer_device,
            "method": "m.sas.v1",
            "transport": "room" if flow.room_id else "to_device",
            **extra,
        }
        await record_audit(
            self.audit,
            [
                AuditEntry(
                    actor=actor,
                    action=action,
                    subject=flow.peer_user,
                    room_id=flow.room_id,
                    details=details,
                )
            ],
        )

    async def _audit_cancel(
        self,
        user_id: str,
        device: str | None,
        code: Code,
        *,
        by: str,
        reason: str | None = None,
        room_id: str | None = None,
    ) -> None:
        details: dict[str, Any] = {
            "device": device,
            "method": "m.sas.v1",
            "code": code.value,
            "by": by,
            "transport": "room" if room_id else "to_device",
        }
        if reason:
            details["reason"] = reason
        await record_audit(
            self.audit,
            [
                AuditEntry(
                    actor=user_id if by == "peer" else "system",
                    action="verification.cancelled",
                    subject=user_id,
                    room_id=room_id,
                    details=details,
                )
            ],
        )
