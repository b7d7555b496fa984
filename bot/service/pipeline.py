"""The event pipeline: sync batch → facts → decisions → effects → audit, committed with the
sync position so that no event is lost and none is audited twice."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg
from mautrix.errors import DecryptionError, SessionNotFound
from mautrix.types import EventID, RoomID

from bot.batch_scope import batch_scope, keep
from bot.clock import Clock
from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import transaction
from bot.db.outbox import OutboxRepo
from bot.db.pending_decryption import PendingDecryption
from bot.db.rooms import RoomsRepo
from bot.db.sync_state import SyncState
from bot.db.unit_of_work import UnitOfWork
from bot.matrix.facts import (
    MembershipFact,
    MessageFact,
    PowerLevelsFact,
    RedactionFact,
    facts_from_event,
    undecryptable_message,
)
from bot.matrix.gateway import SyncBatch
from bot.metrics import Metrics
from bot.policy.audit_chain import message_hmac
from bot.policy.membership import membership_action
from bot.policy.storable import storable
from bot.service.access import AccessService
from bot.service.commands import CommandService, refused
from bot.service.events import Committed, EffectsQueued, EventBus
from bot.service.failures import error_reference, is_transient
from bot.service.observers import BatchOutcome, Observer
from bot.service.ports import EventSource
from bot.service.withheld import WithheldNotices

log = logging.getLogger("chaperone.pipeline")

Step = Callable[[BatchOutcome], Awaitable[None]]


class EventPipeline:
    def __init__(
        self,
        config: Config,
        gateway: EventSource,
        audit: AuditLog,
        sync_state: SyncState,
        pending: PendingDecryption,
        rooms: RoomsRepo,
        access: AccessService,
        commands: CommandService,
        observers: list[Observer] | None = None,
        metrics: Metrics | None = None,
        withheld_notices: WithheldNotices | None = None,
        *,
        outbox: OutboxRepo,
        clock: Clock,
        bus: EventBus | None = None,
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
        self.outbox = outbox
        self.clock = clock
        # After each commit: EffectsQueued (the outbox wakes), then Committed (alerts, ...).
        self.bus = bus if bus is not None else EventBus()
        self.bot_user_id = config.bot.user_id
        self._hmac_key = config.audit.hmac_key.encode()

    # -- one batch --------------------------------------------------------------------------

    async def handle_batch(self, batch: SyncBatch) -> None:
        """See _handle_batch; what cannot change within the batch is read once for it. (Not
        one held connection for the batch: mautrix's state store runs queries concurrently,
        e.g. while loading a room's state, and one connection cannot.)"""
        with batch_scope():
            await self._handle_batch(batch)

    async def _handle_batch(self, batch: SyncBatch) -> None:
        """Handle and commit a sync batch, its new position included; one event's trouble costs
        that event only.

        An event whose handling raises anything but a transient error (Postgres or the
        homeserver unreachable) is recorded as `event.failed` at once. When the batch's rows
        cannot be stored (Postgres refused something one event holds), the batch is handled
        again event by event, each in a savepoint of one transaction, so only the event whose
        rows are refused becomes `event.failed`. Effects wait in the outbox until the commit,
        so handling a batch twice never repeats one. A transient error fails the batch, which
        the sync loop retries.
        """
        steps = list(self._steps(batch))
        event_ids = [raw["event_id"] for raw, _ in steps if isinstance(raw.get("event_id"), str)]
        outcome = BatchOutcome(audited=await self.audit.audited(event_ids))
        await self.gateway.read_message_indices_ahead(raw for raw, _ in steps)
        rooms = [RoomID(room_id) for room_id in dict.fromkeys([*batch.timelines, *batch.left])]
        await self.rooms.read_ahead(rooms)
        for observer in self.observers:
            await observer.read_ahead(rooms)
        for raw, handle in steps:
            await self._isolated(raw, outcome, handle)
        try:
            await self.commit(outcome, batch.next_batch)
        except Exception as e:
            if is_transient(e):
                raise
            ref = error_reference()
            log.warning(
                "A batch could not be stored (%s, ref %s); storing it event by event",
                type(e).__name__,
                ref,
            )
            with batch_scope():  # what was kept may come from the transaction rolled back
                await self.handle_batch_event_by_event(batch)

    async def handle_batch_event_by_event(self, batch: SyncBatch) -> None:
        """Each event handled and stored in a savepoint of the batch's one transaction."""
        committed: list[AuditEntry] = []
        notes: dict[str, Any] = {}
        async with UnitOfWork.batch(self.audit):
            for raw, handle in self._steps(batch):
                outcome = BatchOutcome(notes=notes)
                try:
                    async with transaction(self.audit.db):  # a savepoint, inside the batch's
                        await handle(outcome)
                        await self.unit_of(outcome).commit()
                except Exception as e:
                    if is_transient(e):
                        raise
                    outcome = BatchOutcome(entries=[self.event_failed(raw, e)])
                    await self.unit_of(outcome).commit()
                committed += outcome.entries
            if batch.next_batch is not None:
                await self.sync_state.save(self.bot_user_id, batch.next_batch)
        await self.after_commit(committed)

    def _steps(self, batch: SyncBatch) -> Iterator[tuple[dict[str, Any], Step]]:
        """Each event of the batch with what handles it, in order."""
        for room_id, invite in batch.invites.items():
            yield (
                {**invite, "room_id": room_id},
                partial(self._invite_into, RoomID(room_id), invite),
            )
        for events in batch.timelines.values():
            for raw in events:
                yield raw, partial(self.handle_timeline_event, raw)
        for events in batch.left.values():
            for raw in events:
                yield raw, partial(self._left_event, raw)

    async def _invite_into(
        self, room_id: RoomID, invite: dict[str, Any], outcome: BatchOutcome
    ) -> None:
        outcome.entries += await self.handle_invite(room_id, invite)

    async def _left_event(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        await self.handle_plain_event(raw, outcome, encrypted=False, trust="unknown")

    async def _isolated(self, raw: dict[str, Any], outcome: BatchOutcome, handle: Step) -> None:
        """Handle one event; if it raises (but for a transient error), record `event.failed`
        in its place and drop whatever it had queued."""
        mark = (
            len(outcome.entries),
            len(outcome.writes),
            len(outcome.pending),
            len(outcome.effects),
        )
        try:
            await handle(outcome)
        except Exception as e:
            if is_transient(e):
                raise
            n_entries, n_writes, n_pending, n_effects = mark
            del outcome.entries[n_entries:]
            del outcome.writes[n_writes:]
            del outcome.pending[n_pending:]
            del outcome.effects[n_effects:]
            outcome.entries.append(self.event_failed(raw, e))

    def event_failed(self, raw: dict[str, Any], error: BaseException) -> AuditEntry:
        ref = error_reference()
        # The type only: an exception's text may quote event content. A Postgres error also
        # names the table and constraint (schema names, never data).
        where = ""
        if isinstance(error, asyncpg.PostgresError):
            table = getattr(error, "table_name", None)
            constraint = getattr(error, "constraint_name", None)
            where = f" on {table or '?'}/{constraint or '?'}" if table or constraint else ""
        log.error(
            "Event %s in %s could not be handled (%s%s, ref %s); recorded as event.failed",
            storable(raw.get("event_id")),
            storable(raw.get("room_id")),
            type(error).__name__,
            where,
            ref,
        )
        sender = raw.get("sender")
        return AuditEntry(
            actor=sender if isinstance(sender, str) and sender else "system",
            action="event.failed",
            room_id=_text_or_none(raw.get("room_id")),
            event_id=_text_or_none(raw.get("event_id")),
            details={
                "type": storable(raw.get("type")),
                "error": type(error).__name__,
                "ref": ref,
            },
        )

    async def was_audited(self, outcome: BatchOutcome, event_id: EventID, action: str) -> bool:
        """Whether a replayed event was already recorded (so it is not acted on twice)."""
        if outcome.audited is not None:
            return (event_id, action) in outcome.audited
        return await self.audit.exists(event_id, action)

    def unit_of(self, outcome: BatchOutcome) -> UnitOfWork:
        """What handling produced, as one unit of work: the audit rows first, then the batch's
        crypto bookkeeping, the observers' writes, events waiting for keys and effects for the
        outbox. A caller adds its own writes (the sync position) and commits it."""
        now = self.clock.now()
        return (
            UnitOfWork(self.audit, outcome.entries)
            .then(self.gateway.crypto_store.save_batch_writes, *outcome.writes)
            .then(partial(self._add_pending, outcome.pending, now))
            .then(partial(self.outbox.add, outcome.effects, now))
        )

    async def _add_pending(self, pending: list[dict[str, Any]], now: datetime) -> None:
        for raw in pending:
            content = raw.get("content", {})
            await self.pending.add(
                event_id=raw["event_id"],
                room_id=raw["room_id"],
                sender=raw.get("sender", ""),
                session_id=content.get("session_id", ""),
                sender_key=content.get("sender_key", ""),
                event=storable(raw),
                first_seen=now,
                next_attempt=now,
            )

    async def commit(self, outcome: BatchOutcome, next_batch: str | None) -> None:
        """Everything the batch produced and the new sync position: all or nothing."""
        unit = self.unit_of(outcome)
        if next_batch is not None:
            unit.then(partial(self.sync_state.save, self.bot_user_id, next_batch))
        await unit.commit()
        await self.after_commit(outcome.entries)

    async def after_commit(self, entries: list[AuditEntry]) -> None:
        """Wake the outbox for the effects just committed; publish the rows. Never raises
        (the batch is done; a failing handler is logged by the bus)."""
        await self.bus.publish(EffectsQueued())
        await self.bus.publish(Committed(entries))

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
        try:
            decrypted = await self.gateway.decrypt(raw)
        except SessionNotFound:
            code = self.gateway.withheld_code(raw)
            if code is not None:
                await self.undecryptable(raw, f"withheld: {code}", outcome, withheld_code=code)
                return
            if await self.was_audited(outcome, raw["event_id"], "decryption.failed"):
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
            await self.undecryptable(raw, type(e).__name__, outcome)
            return
        await self.handle_plain_event(
            decrypted.raw, outcome, encrypted=True, trust=decrypted.trust
        )

    async def undecryptable(
        self,
        raw: dict[str, Any],
        reason: str,
        outcome: BatchOutcome,
        *,
        withheld_code: str | None = None,
    ) -> None:
        """An encrypted event the bot will never read: `decryption.failed`, the room told when
        the sender's app withheld the key, and the consent rules judge it like any message
        (they are about who and when, not what)."""
        if await self.was_audited(outcome, raw["event_id"], "decryption.failed"):
            return  # judged when it was recorded
        outcome.entries.append(self.decryption_failed(raw, reason))
        if withheld_code is not None and self.withheld_notices is not None:
            notice = self.withheld_notices.notice_for(raw, withheld_code)
            if notice is not None:
                outcome.effects.append(notice)
        fact = undecryptable_message(raw)
        if fact.sender == self.bot_user_id:
            return
        for observer in self.observers:
            await observer.on_message(fact, outcome)

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
        if await self.was_audited(outcome, fact.event_id, "message.sent"):
            return
        if self.commands.is_command(fact):
            entries = await self.commands.handle(fact, outcome)
            if entries is not None:
                outcome.entries += entries
                if not refused(entries):
                    return
            # Not a valid command, or one its sender may not run (its arguments could be
            # free text to the room): judged by the consent rules like any other message.
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
        if action is None or await self.was_audited(outcome, fact.event_id, action):
            return
        # Stored with the batch's unit (after its audit rows); later events of this batch see
        # the room as managed (or not) from the batch's memo.
        if action == "room.joined":
            outcome.writes.append(partial(self.rooms.joined, fact.room_id, fact.sender))
            keep(("managed", fact.room_id), True)
        elif action == "room.left":
            outcome.writes.append(partial(self.rooms.left, fact.room_id))
            keep(("managed", fact.room_id), False)
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

    async def handle_invite(self, room_id: RoomID, invite: dict[str, Any]) -> list[AuditEntry]:
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


def _text_or_none(value: Any) -> str | None:
    return storable(value) if isinstance(value, str) else None
