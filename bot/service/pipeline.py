"""The event pipeline: sync batch → facts → decisions → effects → audit, committed with the
sync position so that no event is lost and none is audited twice (SPEC 11)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from mautrix.errors import DecryptionError, SessionNotFound

from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import transaction
from bot.db.pending_decryption import PendingDecryption
from bot.db.rooms import RoomsRepo
from bot.db.sync_state import SyncState
from bot.matrix.facts import (
    MembershipFact,
    MessageFact,
    PowerLevelsFact,
    RedactionFact,
    facts_from_event,
)
from bot.matrix.gateway import MatrixGateway, SyncBatch
from bot.metrics import Metrics
from bot.policy.audit_chain import message_hmac
from bot.policy.membership import membership_action
from bot.service.access import AccessService
from bot.service.commands import CommandService
from bot.service.observers import BatchOutcome, Observer
from bot.service.withheld import WithheldNotices

log = logging.getLogger("chaperone.pipeline")


class EventPipeline:
    def __init__(
        self,
        config: Config,
        gateway: MatrixGateway,
        audit: AuditLog,
        sync_state: SyncState,
        pending: PendingDecryption,
        rooms: RoomsRepo,
        access: AccessService,
        commands: CommandService,
        observers: list[Observer] | None = None,
        metrics: Metrics | None = None,
        withheld_notices: WithheldNotices | None = None,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.audit = audit
        self.sync_state = sync_state
        self.pending = pending
        self.rooms = rooms
        self.access = access
        self.commands = commands
        # The caller's list itself (even empty): features append their observers to it later.
        self.observers = observers if observers is not None else []
        self.metrics = metrics
        self.withheld_notices = withheld_notices
        # Told the audit rows of each committed batch (alerts, metrics); see notify_committed.
        self.committed_listeners: list[Callable[[list[AuditEntry]], Awaitable[None]]] = []
        self.bot_user_id = config.bot.user_id
        self._hmac_key = config.audit.hmac_key.encode()

    # -- one batch --------------------------------------------------------------------------

    async def process_batch(self, batch: SyncBatch, *, isolate: bool = False) -> BatchOutcome:
        """Handle every event of the batch.

        A failure fails the whole batch, which the sync loop retries (Postgres or the
        homeserver may be down). With `isolate`, used once a batch keeps failing, an event that
        still raises is recorded as `event.failed` instead, so one bad event cannot stop the
        bot for every room.
        """
        outcome = BatchOutcome()
        for room_id, invite in batch.invites.items():
            await self._guarded(
                isolate,
                {**invite, "room_id": room_id},
                outcome,
                partial(self._invite_into, room_id, invite, outcome),
            )
        for events in batch.timelines.values():
            for raw in events:
                await self._guarded(
                    isolate, raw, outcome, partial(self.handle_timeline_event, raw, outcome)
                )
        for events in batch.left.values():
            for raw in events:
                await self._guarded(
                    isolate,
                    raw,
                    outcome,
                    partial(
                        self.handle_plain_event, raw, outcome, encrypted=False, trust="unknown"
                    ),
                )
        return outcome

    async def _invite_into(
        self, room_id: str, invite: dict[str, Any], outcome: BatchOutcome
    ) -> None:
        outcome.entries += await self.handle_invite(room_id, invite)

    async def _guarded(
        self,
        isolate: bool,
        raw: dict[str, Any],
        outcome: BatchOutcome,
        handle: Callable[[], Awaitable[None]],
    ) -> None:
        if not isolate:
            await handle()
            return
        try:
            await handle()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            ref = error_reference()
            # The type only: an exception's text may quote event content.
            log.error(
                "Event %s in %s keeps failing (%s, ref %s); recorded as event.failed",
                raw.get("event_id"),
                raw.get("room_id"),
                type(e).__name__,
                ref,
            )
            outcome.entries.append(
                AuditEntry(
                    actor=raw.get("sender") or "system",
                    action="event.failed",
                    room_id=raw.get("room_id"),
                    event_id=raw.get("event_id"),
                    details={"type": raw.get("type"), "error": type(e).__name__, "ref": ref},
                )
            )

    async def commit(self, outcome: BatchOutcome, next_batch: str | None) -> None:
        """Audit rows, waiting encrypted events and the new sync position: all or nothing."""
        now = datetime.now(UTC)
        async with transaction(self.audit.db):
            await self.audit.append(outcome.entries)
            for write in outcome.writes:
                await write()
            for raw in outcome.pending:
                content = raw.get("content", {})
                await self.pending.add(
                    event_id=raw["event_id"],
                    room_id=raw["room_id"],
                    sender=raw.get("sender", ""),
                    session_id=content.get("session_id", ""),
                    sender_key=content.get("sender_key", ""),
                    event=raw,
                    first_seen=now,
                    next_attempt=now,
                )
            if next_batch is not None:
                await self.sync_state.save(self.bot_user_id, next_batch)
        await self.notify_committed(outcome.entries)

    async def notify_committed(self, entries: list[AuditEntry]) -> None:
        """Tell the listeners what was just committed; never raises (the batch is done)."""
        for listener in self.committed_listeners:
            try:
                await listener(entries)
            except Exception:
                log.warning("Committed-rows listener failed (ref %s)", error_reference())

    # -- events -----------------------------------------------------------------------------

    async def handle_timeline_event(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        if self.metrics is not None:
            self.metrics.events_processed.inc()
        if raw.get("type") != "m.room.encrypted":
            await self.handle_plain_event(raw, outcome, encrypted=False, trust="unknown")
            return
        for observer in self.observers:
            await observer.on_encrypted(raw, outcome)
        if (raw.get("unsigned") or {}).get("redacted_because"):
            # Redacted before the bot read it (e.g. replayed after a crash that came after the
            # bot's own redaction): there is nothing to decrypt, and nothing failed.
            outcome.entries.append(
                AuditEntry(
                    actor=raw.get("sender", "system"),
                    action="message.sent",
                    room_id=raw.get("room_id"),
                    event_id=raw.get("event_id"),
                    details={"encrypted": True, "redacted_before_read": True},
                )
            )
            return
        session_id = raw.get("content", {}).get("session_id", "")
        if session_id in self.gateway.withheld:
            code = self.gateway.withheld[session_id]
            outcome.entries.append(self.decryption_failed(raw, f"withheld: {code}"))
            if self.withheld_notices is not None:
                await self.withheld_notices.tell(raw, code)
            return
        try:
            decrypted = await self.gateway.decrypt(raw)
        except SessionNotFound:
            if await self.audit.exists(raw["event_id"], "decryption.failed"):
                return
            outcome.pending.append(raw)
            return
        except DecryptionError as e:
            log.warning(
                "Could not decrypt %s in %s: %s",
                raw.get("event_id"),
                raw.get("room_id"),
                type(e).__name__,
            )
            outcome.entries.append(self.decryption_failed(raw, type(e).__name__))
            return
        await self.handle_plain_event(
            decrypted.raw, outcome, encrypted=True, trust=decrypted.trust
        )

    async def handle_plain_event(
        self, raw: dict[str, Any], outcome: BatchOutcome, *, encrypted: bool, trust: str
    ) -> None:
        for observer in self.observers:
            await observer.on_event(raw, outcome)
        if "state_key" in raw:
            for observer in self.observers:
                await observer.on_state(raw, outcome)
        fact = facts_from_event(raw, trust=trust, encrypted=encrypted)
        if isinstance(fact, MessageFact):
            await self.handle_message(fact, outcome)
        elif isinstance(fact, MembershipFact):
            await self.handle_membership(fact, outcome)
        elif isinstance(fact, PowerLevelsFact):
            outcome.entries.append(
                AuditEntry(
                    actor=fact.sender,
                    action="power_levels.changed",
                    room_id=fact.room_id,
                    event_id=fact.event_id,
                    details={"changes": fact.changes},
                )
            )
        elif isinstance(fact, RedactionFact) and fact.sender != self.bot_user_id:
            # The bot's own redactions are recorded, with their cause, by the flow that made
            # them (consent enforcement, retention); recording them here too would race it.
            outcome.entries.append(
                AuditEntry(
                    actor=fact.sender,
                    action="message.redacted",
                    room_id=fact.room_id,
                    event_id=fact.event_id,
                    details={"redacts": fact.redacts},
                )
            )

    async def handle_message(self, fact: MessageFact, outcome: BatchOutcome) -> None:
        outcome.entries.append(
            AuditEntry(
                actor=fact.sender,
                action="message.sent",
                room_id=fact.room_id,
                event_id=fact.event_id,
                details={
                    "hmac": message_hmac(self._hmac_key, fact.body),
                    "msgtype": fact.msgtype,
                    "encrypted": fact.encrypted,
                },
            )
        )
        if fact.sender == self.bot_user_id:
            return
        # A replay after a crash must not act twice on a message that was already recorded.
        if await self.audit.exists(fact.event_id, "message.sent"):
            return
        if self.commands.is_command(fact):
            outcome.entries += await self.commands.handle(fact)
            return
        for observer in self.observers:
            await observer.on_message(fact, outcome)

    async def handle_membership(self, fact: MembershipFact, outcome: BatchOutcome) -> None:
        action = membership_action(
            sender=fact.sender,
            target=fact.target,
            membership=fact.membership,
            prev_membership=fact.prev_membership,
            bot_user_id=self.bot_user_id,
        )
        if action is None or await self.audit.exists(fact.event_id, action):
            return
        if action == "room.joined":
            await self.rooms.joined(fact.room_id, fact.sender)
        elif action == "room.left":
            await self.rooms.left(fact.room_id)
        outcome.entries.append(
            AuditEntry(
                actor=fact.sender,
                action=action,
                room_id=fact.room_id,
                event_id=fact.event_id,
                subject=fact.target,
                details={"membership": fact.membership, "previous": fact.prev_membership},
            )
        )
        for observer in self.observers:
            await observer.on_membership(fact, outcome)

    async def handle_invite(self, room_id: str, invite: dict[str, Any]) -> list[AuditEntry]:
        """Join when staff or an admin invites the bot; reject (and record) anyone else's."""
        inviter = invite.get("sender", "")
        if await self.access.may_invite_bot(inviter):
            # A failed join fails the batch, so it is retried (the invite is not seen again).
            await self.gateway.join(room_id)
            return []  # room.joined is recorded from our own join event
        await self.gateway.reject_invite(room_id)
        log.info("Rejected an invite to %s from %s", room_id, inviter)
        return [
            AuditEntry(
                actor=inviter,
                action="invite.rejected",
                room_id=room_id,
                event_id=invite.get("event_id"),
                subject=self.bot_user_id,
                details={"reason": "inviter is neither staff nor admin"},
            )
        ]

    def decryption_failed(self, raw: dict[str, Any], reason: str) -> AuditEntry:
        content = raw.get("content", {})
        return AuditEntry(
            actor=raw.get("sender", "system"),
            action="decryption.failed",
            room_id=raw.get("room_id"),
            event_id=raw.get("event_id"),
            details={
                "reason": reason,
                "session_id": content.get("session_id"),
                "device_id": content.get("device_id"),
            },
        )


def error_reference() -> str:
    """A short reference number tying a user-facing error to a log line (never to content)."""
    return secrets.token_hex(4).upper()


async def sleep_backoff(attempt: int, cap: float = 30.0) -> None:
    await asyncio.sleep(min(cap, 0.5 * 2**attempt))
