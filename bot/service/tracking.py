"""Event metadata for retention: every event the bot sees is recorded (never content), history
from before the bot joined (or before a retention change) is back-filled through /messages,
and redactions seen in sync are noted so nothing is removed twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from mautrix.types import EventID, RoomID, UserID

from bot.db.audit import AuditEntry
from bot.db.retention_rooms import RetentionRooms
from bot.db.tracked_events import TrackedEvents
from bot.matrix.facts import MembershipFact
from bot.matrix.history import is_redacted
from bot.matrix.ratelimit import retry_rate_limited
from bot.policy.retention import TrackedEvent, is_retention_reason, pacing_delay
from bot.policy.storable import storable_text
from bot.service.background import Backoff, Outage, run_forever
from bot.service.events import EventBus, HistoryRecorded
from bot.service.observers import BatchOutcome, Observer
from bot.service.ports import RoomHistory

log = logging.getLogger("chaperone.retention.tracking")

T = TypeVar("T")


def tracked_from_raw(raw: dict[str, Any]) -> TrackedEvent | None:
    """The metadata of a raw event, or None when it lacks what identifies it."""
    event_id, room_id = raw.get("event_id"), raw.get("room_id")
    ts = raw.get("origin_server_ts")
    if not isinstance(event_id, str) or not isinstance(room_id, str) or not isinstance(ts, int):
        return None
    return TrackedEvent(
        event_id=EventID(event_id),
        room_id=RoomID(room_id),
        sender=UserID(storable_text(str(raw.get("sender", "")))),
        event_type=storable_text(str(raw.get("type", ""))),
        is_state="state_key" in raw,
        origin_ts=ts,
        redacted=is_redacted(raw),
    )


def redaction_target(raw: dict[str, Any]) -> EventID | None:
    content = raw.get("content") or {}
    target = content.get("redacts") or raw.get("redacts")  # v11+: in content
    return EventID(target) if isinstance(target, str) else None


def removal_entry(
    bot_user_id: UserID,
    room_id: RoomID,
    event_id: str,  # the audit row's: the redaction's ID as the effect gave it, or the event's
    target: EventID,
    *,
    method: str,
    extra: dict[str, Any] | None = None,
) -> AuditEntry:
    """`message.redacted` for a retention removal. For a redaction, `event_id` is the
    redaction's own ID: the pipeline's row for the same redaction seen in sync is then the
    same row, so a removal is audited once whichever is recorded first."""
    return AuditEntry(
        actor=bot_user_id,
        action="message.redacted",
        room_id=room_id,
        event_id=event_id,
        details={"redacts": target, "cause": "retention", "method": method, **(extra or {})},
    )


async def paced(
    op: Callable[[], Awaitable[T]], on_wait: Callable[[float], None] | None = None
) -> T:
    """Run `op`, waiting out each 429 for as long as the homeserver asks (else a doubling
    backoff, `pacing_delay`), retrying until it succeeds."""
    return await retry_rate_limited(op, attempts=None, delay=pacing_delay, on_wait=on_wait)


class RetentionTracker(Observer):
    """Queues the metadata of each batch's events as one write in the batch's transaction."""

    def __init__(
        self, tracked: TrackedEvents, rooms_state: RetentionRooms, bot_user_id: UserID
    ) -> None:
        self.tracked = tracked
        self.rooms_state = rooms_state
        self.bot_user_id = bot_user_id
        self._outcome: BatchOutcome | None = None
        self._batch: list[TrackedEvent] = []
        self.backfill_wanted = asyncio.Event()

    def _track(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        event = tracked_from_raw(raw)
        if event is None:
            return
        if self._outcome is not outcome:
            self._outcome, self._batch = outcome, []
            batch = self._batch

            async def write() -> None:
                await self.tracked.record(batch)

            outcome.writes.append(write)
        self._batch.append(event)

    async def on_encrypted(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        self._track(raw, outcome)

    async def on_event(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        self._track(raw, outcome)
        if raw.get("type") != "m.room.redaction":
            return
        target = redaction_target(raw)
        if target is None:
            return
        reason = (raw.get("content") or {}).get("reason")
        if raw.get("sender") == self.bot_user_id and is_retention_reason(reason):
            # Our own sweep's redaction: audited with its cause ahead of the pipeline's row.
            outcome.entries.append(
                removal_entry(
                    self.bot_user_id, raw["room_id"], raw["event_id"], target, method="redact"
                )
            )
            redaction_id = str(raw["event_id"])

            async def removed() -> None:
                await self.tracked.mark_removed(target, redaction_id)

            outcome.writes.append(removed)
            return

        async def redacted() -> None:
            await self.tracked.mark_redacted(target)

        outcome.writes.append(redacted)

    async def on_membership(self, fact: MembershipFact, outcome: BatchOutcome) -> None:
        if (
            fact.target == self.bot_user_id
            and fact.membership == "join"
            and fact.prev_membership != "join"
        ):
            room_id = fact.room_id

            async def want() -> None:
                await self.rooms_state.request_backfill(room_id)

            outcome.writes.append(want)

    async def on_committed(self, entries: list[AuditEntry]) -> None:
        """Pipeline listener: once the bot's own join is committed, its back-fill may start."""
        if any(e.action == "room.joined" for e in entries):
            self.backfill_wanted.set()


class Backfiller:
    """Pages a room's history back through /messages and records its metadata.

    Asked for in the database (same transaction as the join, or by a retention change), so a
    restart finishes what was asked.
    """

    def __init__(
        self,
        history: RoomHistory,
        tracked: TrackedEvents,
        rooms_state: RetentionRooms,
        wake: asyncio.Event,
        *,
        poll_seconds: float = 2.0,
        backoff: Backoff | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.history = history
        self.tracked = tracked
        self.rooms_state = rooms_state
        self.wake = wake
        self.poll_seconds = poll_seconds
        self.done_rooms = 0
        self.outage = Outage(log, "Back-fill", backoff)
        self._lock = asyncio.Lock()
        # HistoryRecorded after each room (the sweeper publishes its retention state).
        self.bus = bus if bus is not None else EventBus()

    async def run(self) -> None:
        """Back-fill what was asked for, on wake-up or every `poll_seconds`; while it fails
        (Postgres or the homeserver down), back off and log the outage once."""
        await run_forever(
            self.run_wanted, interval=self.poll_seconds, outage=self.outage, wake=self.wake
        )

    async def run_wanted(self, only: Sequence[RoomID] | None = None) -> None:
        """Back-fill every room (or those of `only`) that asked for it."""
        async with self._lock:
            for room_id in await self.rooms_state.backfills_wanted():
                if only is None or room_id in only:
                    await self.backfill(room_id)

    async def backfill(self, room_id: RoomID) -> int:
        """Record the metadata of the room's whole visible history; returns events seen."""
        seen = 0
        token: str | None = None
        while True:
            page, following = await paced(partial(self.history.messages_page, room_id, token))
            events = [e for e in (tracked_from_raw(raw) for raw in page) if e is not None]
            await self.tracked.record(events)
            seen += len(events)
            if following is None:
                break
            token = following
        await self.rooms_state.backfill_done(room_id)
        self.done_rooms += 1
        await self.bus.publish(HistoryRecorded(room_id))
        log.info("Recorded the metadata of %d earlier events in %s", seen, room_id)
        return seen
