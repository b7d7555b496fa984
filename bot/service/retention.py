"""The retention sweeper: archive, then remove, each message older than its room's
retention; paced by the homeserver's 429s; resumable; never under a legal hold.

This module decides per room and per sweep (policy, hold, cutoff, power, announcement) and
records; retention_redact and retention_purge carry out the two removal methods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from functools import partial
from typing import Any, TypeVar

from mautrix.types import EventID, RoomID, UserID

from bot.clock import Clock
from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.retention_rooms import RetentionRooms
from bot.db.rooms import RoomsRepo
from bot.db.tracked_events import TrackedEvents
from bot.db.unit_of_work import UnitOfWork, record_audit
from bot.matrix.effects import MatrixEffects
from bot.metrics import Metrics
from bot.policy.retention import (
    Preview,
    TrackedEvent,
    cutoff_ms,
    describe_preview,
    effective_retention,
    retry_failed_before_ms,
)
from bot.policy.room_policy import RoomPolicy
from bot.service.alerts import FORBIDDEN, RATE_LIMITED, Alerts, removal_problem_text
from bot.service.archive import Archiver
from bot.service.background import Backoff, Outage
from bot.service.events import HistoryRecorded, PolicyChanged
from bot.service.failures import error_reference
from bot.service.policy import PolicyService
from bot.service.ports import RoomHistory
from bot.service.retention_notices import RoomNotices, sweep_report
from bot.service.retention_purge import purge_room
from bot.service.retention_redact import redact_room
from bot.service.tracking import Backfiller, paced, removal_entry

log = logging.getLogger("chaperone.retention")

T = TypeVar("T")


@dataclass
class RoomSweep:
    """What one sweep did in one room; its counts become the `retention.swept` details."""

    room_id: RoomID
    due: int = 0
    removed: int = 0
    archived: int = 0
    unreadable: int = 0
    failed: int = 0
    gone: int = 0
    waits: int = 0
    waited_seconds: float = 0.0
    held: bool = False
    off: bool = False
    dry_run: bool = False
    no_power: bool = False
    error: str | None = None

    def waited(self, seconds: float) -> None:
        self.waits += 1
        self.waited_seconds += seconds

    def details(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "removed": self.removed,
            "archived": self.archived,
            "unreadable": self.unreadable,
            "failed": self.failed,
            "already_gone": self.gone,
            "rate_limited_waits": self.waits,
            "waited_seconds": round(self.waited_seconds, 3),
            "held": self.held,
            "retention_off": self.off,
            "dry_run": self.dry_run,
            "no_power": self.no_power,
            "error": self.error,
        }


@dataclass(frozen=True)
class SweepRequest:
    room_ids: tuple[RoomID, ...] | None = None  # None: every managed room
    requested_by: UserID | None = None  # None: the schedule
    reply_room: RoomID | None = None


class RetentionService:
    def __init__(
        self,
        config: Config,
        history: RoomHistory,
        effects: MatrixEffects,
        policy: PolicyService,
        rooms: RoomsRepo,
        tracked: TrackedEvents,
        rooms_state: RetentionRooms,
        audit: AuditLog,
        metrics: Metrics,
        alerts: Alerts,
        archiver: Archiver | None,
        backfiller: Backfiller,
        *,
        clock: Clock,
        batch_size: int = 100,
        purge_poll_seconds: float = 0.5,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.history = history
        self.effects = effects
        self.policy = policy
        self.rooms = rooms
        self.tracked = tracked
        self.rooms_state = rooms_state
        self.audit = audit
        self.metrics = metrics
        self.alerts = alerts
        self.archiver = archiver
        self.backfiller = backfiller
        self.clock = clock
        self.batch_size = batch_size
        self.purge_poll_seconds = purge_poll_seconds
        self.bot_user_id = config.bot.user_id
        self.minimum = config.retention.minimum_seconds
        self.method = config.retention.method
        self.notices = RoomNotices(
            config, history, effects, rooms_state, policy, archived=archiver is not None
        )
        self.requests: asyncio.Queue[SweepRequest] = asyncio.Queue()
        self.progress: RoomSweep | None = None
        self.last: str | None = None
        self.backlog = 0
        self.outage = Outage(log, "The retention sweep", backoff)
        self.retry_in = 0.0  # after a failed sweep, the backoff before the next attempt
        self.rate_limit_told = False  # the management room knows removals are being paced

    # -- reacting to policy changes -------------------------------------------------------

    async def on_policy_changed(self, change: PolicyChanged) -> None:
        """A retention change back-fills history, after which `room_ready` (on
        HistoryRecorded) publishes the state and tells the room (once: announcing here as well
        posted the notice twice whenever the two raced); a legal hold is published at once.
        A running sweep re-reads the policy before each removal, so it needs no signal."""
        room_id, field = change.room_id, change.field
        if field not in ("retention", "legal_hold"):
            return
        if not await self.rooms.is_managed(room_id):
            return
        if field == "retention":
            await self.rooms_state.request_backfill(room_id)
            self.backfiller.wake.set()
            return
        await self.notices.publish(room_id)

    async def on_history_recorded(self, recorded: HistoryRecorded) -> None:
        await self.room_ready(recorded.room_id)

    async def room_ready(self, room_id: RoomID) -> None:
        """After a room's history was recorded (the bot joined, or its retention changed):
        publish its retention state and tell the room, when retention is on there."""
        await self.notices.publish(room_id)
        if not self.effects.dry_run:
            await self.notices.announce_safely(room_id, await self.policy.get(room_id))

    # -- the loop -------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event) -> None:
        """Sweep once the first sync is in (finishing what a restart interrupted), then every
        `retention.sweep_interval`, and whenever a sweep is asked for."""
        await ready.wait()
        request = SweepRequest()
        interval = self.config.retention.sweep_interval_seconds
        while True:
            await self.serve(request)
            # After a failure, retry sooner (backing off) but never later than the schedule.
            wait = min(interval, self.retry_in) if self.outage.failing else interval
            try:
                request = await asyncio.wait_for(self.requests.get(), wait)
            except TimeoutError:
                request = SweepRequest()

    def request(self, request: SweepRequest) -> None:
        self.requests.put_nowait(request)

    async def serve(self, request: SweepRequest) -> list[RoomSweep]:
        """Run one sweep; a failure is logged and alerted once per outage (not per retry),
        and its recovery once, so an outage does not drown the operator."""
        try:
            results = await self.sweep(request)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            first = not self.outage.failing
            self.retry_in = self.outage.failed(e)
            ref = self.outage.reference
            if first:
                await self.alerts.send(
                    f"Retention sweeps are failing ({type(e).__name__}, reference {ref}); "
                    "nothing is removed meanwhile. The bot retries with backoff and says "
                    "here when sweeps work again."
                )
            if request.reply_room:
                await self._tell(
                    request.reply_room, f"❌ Retention sweep failed (reference {ref})."
                )
            return []
        if self.outage.succeeded():
            await self.alerts.send("Retention sweeps work again.")
        return results

    async def sweep(self, request: SweepRequest) -> list[RoomSweep]:
        rooms = list(request.room_ids or await self.rooms.managed())
        started = time.monotonic()
        results = [await self.sweep_room(room_id, request) for room_id in rooms]
        await self.update_backlog()
        await self._alert_held_up(results)
        removed = sum(r.removed for r in results)
        failed = sum(r.failed for r in results)
        self.last = (
            f"{self.clock.now().astimezone(UTC):%Y-%m-%d %H:%M:%S UTC}: {removed} removed, "
            f"{failed} failed in {len(rooms)} room(s), {time.monotonic() - started:.1f} s"
        )
        if request.reply_room:
            await self._tell(request.reply_room, sweep_report(results, time.monotonic() - started))
        return results

    # -- one room -------------------------------------------------------------------------

    def cutoff_for(self, policy: RoomPolicy) -> int | None:
        """Events stamped before this are due now; None when nothing may be removed."""
        return cutoff_ms(
            self.clock.now(),
            retention_seconds=policy.retention_seconds,
            minimum_seconds=self.minimum,
            legal_hold=policy.legal_hold,
        )

    async def preview(self, room_id: RoomID) -> tuple[Preview, str]:
        """What the next sweep of the room would remove; changes nothing in the room.

        It does not run a pending history back-fill itself (that would announce and publish the
        retention in the room): it says so, since the count may then still grow.
        """
        policy = await self.policy.get(room_id)
        cutoff = self.cutoff_for(policy)
        preview = (
            Preview(0)
            if cutoff is None
            else await self.tracked.preview(
                room_id, cutoff, retry_failed_before_ms(self.clock.now())
            )
        )
        retention = effective_retention(policy.retention_seconds, self.minimum)
        text = describe_preview(preview, retention, policy.legal_hold)
        if room_id in await self.backfiller.rooms_state.backfills_wanted():
            self.backfiller.wake.set()
            text += " Earlier history is still being recorded: the count may grow."
        return preview, text

    async def sweep_room(self, room_id: RoomID, request: SweepRequest) -> RoomSweep:
        result = RoomSweep(room_id, dry_run=self.effects.dry_run)
        await self.backfiller.run_wanted(only=[room_id])
        policy = await self.policy.get(room_id)
        await self.notices.publish(room_id)
        result.held, result.off = policy.legal_hold, policy.retention_seconds is None
        # Fixed for the whole sweep: it removes what was due when it began, as a preview shows.
        cutoff = self.cutoff_for(policy)
        retry_before = retry_failed_before_ms(self.clock.now())
        if cutoff is not None:
            result.due = (await self.tracked.preview(room_id, cutoff, retry_before)).count
        try:
            if cutoff is not None and result.due and not result.dry_run:
                await self._remove_due(room_id, policy, cutoff, retry_before, result)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            ref = error_reference()
            result.error = f"{type(e).__name__} (ref {ref})"
            log.warning("Retention sweep of %s stopped (ref %s)", room_id, ref, exc_info=True)
            await self.alerts.send(f"Retention sweep of {room_id} stopped (reference {ref}).")
        finally:
            self.progress = None
        if request.requested_by is not None or result.due or result.failed or result.error:
            await self._audit_swept(result, request)
        await self.rooms_state.swept(room_id)
        return result

    async def _remove_due(
        self,
        room_id: RoomID,
        policy: RoomPolicy,
        cutoff: int,
        retry_before: int,
        result: RoomSweep,
    ) -> None:
        if self.method == "redact" and not await self.history.may_redact_others(room_id):
            result.no_power = True
            await self.alerts.send(
                f"Retention cannot remove messages in {room_id}: the bot's power level is below "
                "the room's redact level."
            )
            return
        await self.notices.announce(room_id, policy, on_wait=result.waited)
        self.progress = result
        if self.method == "purge":
            await purge_room(self, room_id, cutoff, retry_before, result)
        else:
            await redact_room(self, room_id, policy, cutoff, retry_before, result)

    async def removable_before(
        self, room_id: RoomID, cutoff: int, result: RoomSweep
    ) -> int | None:
        """The one check right before every removal request, for both methods: re-read the
        room's policy from the database (a legal hold, or a longer retention, may have arrived
        while the sweep archived: by command, or from another instance) and return the cutoff
        still in force, or None when nothing may be removed now."""
        policy = await self.policy.get(room_id)
        if policy.legal_hold and not result.held:
            result.held = True
            log.info("Legal hold on in %s: the sweep stops before removing anything more", room_id)
        current = self.cutoff_for(policy)
        return None if current is None else min(cutoff, current)

    async def record_removal(
        self,
        event: TrackedEvent,
        removal_id: str,  # the redaction's event ID, or the purge's ID
        result: RoomSweep,
        *,
        method: str,
        audit_event_id: EventID | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        entry = removal_entry(
            self.bot_user_id,
            event.room_id,
            audit_event_id or removal_id,
            event.event_id,
            method=method,
            extra=extra,
        )
        # One unit: the audit row (skipped when the sync already recorded it), then the mark.
        unit = UnitOfWork(self.audit, [entry])
        await unit.then(partial(self.tracked.mark_removed, event.event_id, removal_id)).commit()
        result.removed += 1

    # -- helpers --------------------------------------------------------------------------

    async def _alert_held_up(self, results: list[RoomSweep]) -> None:
        """Tell the management room what held removals up, naming the real cause: paced by
        429s (once until a sweep runs without them) or refused (every sweep with
        new refusals: that needs someone to act)."""
        paced_rooms = [r.room_id for r in results if r.waits]
        if paced_rooms and not self.rate_limit_told:
            self.rate_limit_told = True
            await self.alerts.send(
                removal_problem_text(
                    ", ".join(paced_rooms),
                    RATE_LIMITED,
                    exempt_configured=bool(self.config.homeserver.admin_token),
                )
            )
        elif not paced_rooms and any(r.removed for r in results):
            self.rate_limit_told = False
        refused = [r.room_id for r in results if r.failed]
        if refused:
            await self.alerts.send(
                removal_problem_text(", ".join(refused), FORBIDDEN, exempt_configured=False)
            )

    async def paced(self, op: Callable[[], Awaitable[T]], result: RoomSweep) -> T:
        return await paced(op, on_wait=result.waited)

    async def _audit_swept(self, result: RoomSweep, request: SweepRequest) -> None:
        details = result.details()
        details["trigger"] = "command" if request.requested_by else "schedule"
        details["requested_by"] = request.requested_by
        details["method"] = self.method
        await record_audit(
            self.audit,
            [
                AuditEntry(
                    actor=self.bot_user_id,
                    action="retention.swept",
                    room_id=result.room_id,
                    details=details,
                )
            ],
        )

    async def update_backlog(self) -> int:
        total = 0
        retry_before = retry_failed_before_ms(self.clock.now())
        for room_id in await self.rooms.managed():
            cutoff = self.cutoff_for(await self.policy.get(room_id))
            if cutoff is not None:
                total += (await self.tracked.preview(room_id, cutoff, retry_before)).count
        self.backlog = total
        self.metrics.sweep_backlog.set(total)
        return total

    async def _tell(self, room_id: RoomID, text: str) -> None:
        try:
            await paced(lambda: self.effects.notice(room_id, text))
        except Exception:
            log.warning("Could not post the sweep result in %s", room_id, exc_info=True)

    def status_line(self) -> str:
        parts = [f"{self.backlog} message(s) due"]
        current = self.progress
        if current is not None:
            parts.append(
                f"sweeping {current.room_id}: {current.removed}/{current.due} removed"
                + (f", {current.waits} rate-limit waits" if current.waits else "")
            )
        parts.append(f"last sweep {self.last}" if self.last else "no sweep yet")
        return f"Retention ({self.method}): " + "; ".join(parts)
