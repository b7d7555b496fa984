"""Effects exactly once: a flow decides a redaction or a notice while handling an
event and queues it in the batch's outcome; the pipeline stores it in the same transaction as
the event's audit rows; after the commit this worker carries it out, room by room, off the
sync path.

Each effect's transaction ID is derived from its cause, so carrying it out again after a crash
makes the homeserver answer with the first event instead of a second one. A 429 is waited out
for as long as the homeserver asks and the effect tried again until it is done — never
dropped; only a final refusal (the bot lacks the power, the event is gone) ends it, and that
is told to the operator with its cause.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from typing import Any

from mautrix.errors import MatrixRequestError, MForbidden, MNotFound
from mautrix.types import EventID, RoomID, UserID

from bot.clock import Clock
from bot.db.audit import AuditEntry, AuditLog
from bot.db.outbox import OutboxRepo, QueuedEffect, WaitingEffect
from bot.db.unit_of_work import UnitOfWork, Write
from bot.matrix.ratelimit import RateLimited
from bot.policy.retention import pacing_delay
from bot.service.background import Backoff, Outage, run_forever
from bot.service.events import EffectsQueued, EventBus
from bot.service.failures import error_reference
from bot.service.observers import BatchOutcome
from bot.service.ports import Notices

log = logging.getLogger("chaperone.outbox")

EFFECT_EVENT_ID = "$effect"
"""In an `on_done` audit row: replaced by the ID of the event the effect made."""

IDLE_RECHECK_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 60.0
# After a failed attempt (not a 429): 0.5 s, doubling, at most MAX_BACKOFF_SECONDS.
RETRY_BACKOFF = Backoff(initial=0.5, cap=MAX_BACKOFF_SECONDS)
# A room whose effects keep being refused alerts the operator at most this often.
ALERT_INTERVAL_SECONDS = 600.0

Alert = Callable[[str], Awaitable[None]]


def txn_id_for(cause: str) -> str:
    """A transaction ID that is the same every time the same cause is carried out."""
    return "chaperone." + hashlib.sha256(cause.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def queued_notice(
    room_id: RoomID,
    text: str,
    *,
    cause: str,
    mentions: Sequence[UserID] = (),
    on_done: Sequence[AuditEntry] = (),
    html: str | None = None,
) -> QueuedEffect:
    payload: dict[str, Any] = {"text": text, "mentions": list(mentions)}
    if html is not None:
        payload["html"] = html  # the formatted_body Element renders
    return QueuedEffect(
        room_id=room_id,
        txn_id=txn_id_for(f"notice:{room_id}:{cause}"),
        kind="notice",
        payload=payload,
        on_done=[asdict(e) for e in on_done],
    )


def queued_redaction(
    room_id: RoomID, event_id: EventID, reason: str, *, on_done: Sequence[AuditEntry] = ()
) -> QueuedEffect:
    return QueuedEffect(
        room_id=room_id,
        txn_id=txn_id_for(f"redact:{room_id}:{event_id}"),
        kind="redact",
        payload={"event_id": event_id, "reason": reason},
        on_done=[asdict(e) for e in on_done],
    )


def done_entry(row: Mapping[str, Any], result_event: str | None) -> AuditEntry:
    """An `on_done` row with EFFECT_EVENT_ID replaced by the effect's own event."""

    def fill(value: Any) -> Any:
        return result_event if value == EFFECT_EVENT_ID else value

    return AuditEntry(
        actor=row["actor"],
        action=row["action"],
        room_id=row.get("room_id"),
        event_id=fill(row.get("event_id")),
        subject=row.get("subject"),
        details={k: fill(v) for k, v in (row.get("details") or {}).items()},
    )


class FinalRefusal(Exception):
    """The homeserver will never do it (not a reason to try again)."""


class EffectsOutbox:
    """Carries out queued effects after their batch committed, one worker per room."""

    def __init__(
        self,
        repo: OutboxRepo,
        effects: Notices,
        audit: AuditLog,
        clock: Clock,
        alert: Alert,
    ) -> None:
        self.repo = repo
        self.effects = effects
        self.audit = audit
        self.clock = clock
        self.alert = alert
        self._wake = asyncio.Event()
        self._workers: dict[RoomID, asyncio.Task[None]] = {}
        self.rate_limited_rooms: set[RoomID] = set()
        self._alerted: dict[tuple[RoomID, str], float] = {}  # (room, kind) -> last alert
        """Rooms whose effects are waiting out a 429 right now (for status)."""

    def wake(self) -> None:
        """New effects were committed."""
        self._wake.set()

    async def run(self) -> None:
        """Start a worker for every room with effects waiting, when woken and every 30 s."""
        outage = Outage(log, "Reading the outbox")
        await run_forever(
            self._start_workers, interval=IDLE_RECHECK_SECONDS, outage=outage, wake=self._wake
        )

    async def _start_workers(self) -> None:
        for room_id in await self.repo.rooms_waiting():
            worker = self._workers.get(room_id)
            if worker is None or worker.done():
                self._workers[room_id] = asyncio.create_task(
                    self._room(room_id), name=f"outbox {room_id}"
                )

    async def stop(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()

    async def status_line(self) -> str:
        waiting = await self.repo.waiting_count()
        paced = sorted(self.rate_limited_rooms)
        return f"Effects waiting: {waiting}" + (
            f"; paced by the homeserver's rate limit (429) in {len(paced)} room(s)"
            if paced
            else ""
        )

    async def drain(self) -> None:
        """Carry out everything waiting now (tests, and a clean stop)."""
        for room_id in await self.repo.rooms_waiting():
            await self._room(room_id)

    async def _room(self, room_id: RoomID) -> None:
        try:
            while (effect := await self.repo.next_in(room_id)) is not None:
                await self._carry_out(effect)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # Postgres gone: the next wake-up (or 30 s) starts it again
            log.warning("Outbox worker for %s stopped (%s)", room_id, type(e).__name__)

    async def _carry_out(self, effect: WaitingEffect) -> None:
        attempt = 0
        while True:
            try:
                result = await self._perform(effect)
            except asyncio.CancelledError:
                raise
            except RateLimited as e:
                self.rate_limited_rooms.add(effect.room_id)
                await self.repo.attempted(effect.id, "rate limited (429)")
                await asyncio.sleep(pacing_delay(e.retry_after_ms, attempt))
            except FinalRefusal as e:
                await self._refused(effect, str(e))
                return
            except Exception as e:
                ref = error_reference()
                log.warning(
                    "%s in %s failed (%s, ref %s); will retry",
                    effect.kind,
                    effect.room_id,
                    type(e).__name__,
                    ref,
                )
                await self.repo.attempted(effect.id, f"{type(e).__name__} (ref {ref})")
                await asyncio.sleep(RETRY_BACKOFF.delay(attempt + 1))
            else:
                self.rate_limited_rooms.discard(effect.room_id)
                # The on_done rows (audit first), then the row marked done: one unit.
                await (
                    UnitOfWork(self.audit, [done_entry(r, result) for r in effect.on_done])
                    .then(partial(self.repo.done, effect.id, result, self.clock.now()))
                    .commit()
                )
                return
            attempt += 1

    async def _perform(self, effect: WaitingEffect) -> str | None:
        """The event the effect made (None when dry-run skipped it)."""
        payload = effect.payload
        try:
            if effect.kind == "notice":
                html = payload.get("html")
                return await self.effects.notice(
                    effect.room_id,
                    str(payload["text"]),
                    mentions=[UserID(str(m)) for m in payload.get("mentions", [])],
                    html=html if isinstance(html, str) else None,
                    txn_id=effect.txn_id,
                )
            if effect.kind == "redact":
                done = await self.effects.redact(
                    effect.room_id,
                    EventID(str(payload["event_id"])),
                    str(payload["reason"]),
                    txn_id=effect.txn_id,
                )
                return done.event_id
        except RateLimited:
            raise
        except MForbidden as e:
            raise FinalRefusal(f"the homeserver refused it: {e.errcode}") from e
        except MNotFound as e:
            raise FinalRefusal(f"not found: {e.errcode}") from e
        except MatrixRequestError as e:
            # 401: the bot's own login is the trouble, not the effect; tried again once it is
            # back (the sync loop reports it).
            if 400 <= e.http_status < 500 and e.http_status != 401:
                raise FinalRefusal(f"the homeserver refused it: {e.errcode}") from e
            raise
        raise FinalRefusal(f"unknown effect kind {effect.kind!r}")

    async def _refused(self, effect: WaitingEffect, why: str) -> None:
        log.warning("%s in %s refused for good: %s", effect.kind, effect.room_id, why)
        await self.repo.failed(effect.id, why, self.clock.now())
        now = self.clock.monotonic()
        last = self._alerted.get((effect.room_id, effect.kind))
        if last is not None and now - last < ALERT_INTERVAL_SECONDS:
            return
        self._alerted[(effect.room_id, effect.kind)] = now
        if effect.kind == "redact":
            advice = (
                " Give the bot the power to redact there (moderator, level 50)."
                if "M_FORBIDDEN" in why
                else ""
            )
            await self.alert(
                f"Could not redact {effect.payload.get('event_id')} in {effect.room_id}: "
                f"{why}.{advice}"
            )
        else:
            await self.alert(f"Could not post a notice in {effect.room_id}: {why}.")


class EffectQueue:
    """Where flows put what they decided: with the batch when there is one (committed with
    it), else stored at once in a transaction of its own; either way carried out after the
    commit by EffectsOutbox."""

    def __init__(
        self, repo: OutboxRepo, audit: AuditLog, clock: Clock, bus: EventBus | None = None
    ) -> None:
        self.repo = repo
        self.audit = audit
        self.clock = clock
        # EffectsQueued once stored outside a batch (the outbox wakes).
        self.bus = bus if bus is not None else EventBus()

    async def persist(
        self,
        outcome: BatchOutcome | None,
        entries: Sequence[AuditEntry] = (),
        writes: Sequence[Write] = (),
        effects: Sequence[QueuedEffect] = (),
    ) -> None:
        if outcome is not None:
            outcome.entries += entries
            outcome.writes += writes
            outcome.effects += effects
            return
        unit = UnitOfWork(self.audit, entries, writes)
        await unit.then(partial(self.repo.add, effects, self.clock.now())).commit()
        if effects:
            await self.bus.publish(EffectsQueued())
