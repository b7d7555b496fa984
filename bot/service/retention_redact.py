"""`retention.method: redact` (the default): each due message is (archived, then) redacted
for every member and server, one at a time, paced by the homeserver's 429s.

Per event: mark `removing` → redact → record. A restart finds the events marked `removing` and
looks each up before redacting again, so nothing is redacted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mautrix.errors import MForbidden, MNotFound
from mautrix.types import RoomID

from bot.matrix.history import is_redacted
from bot.policy.retention import (
    TrackedEvent,
    effective_retention,
    is_retention_reason,
    redaction_reason,
)
from bot.policy.room_policy import RoomPolicy

if TYPE_CHECKING:
    from bot.service.retention import RetentionService, RoomSweep


async def redact_room(
    service: RetentionService,
    room_id: RoomID,
    policy: RoomPolicy,
    cutoff: int,
    retry_before: int,
    result: RoomSweep,
) -> None:
    in_flight = set(await service.tracked.in_flight(room_id))
    retention = effective_retention(policy.retention_seconds, service.minimum)
    assert retention is not None
    reason = redaction_reason(retention)
    while True:
        batch = await service.tracked.due(room_id, cutoff, retry_before, service.batch_size)
        if not batch:
            return
        for event in batch:
            in_flight_now = event.event_id in in_flight
            if not await _redact_one(service, event, reason, cutoff, in_flight_now, result):
                return  # a legal hold (or a longer retention) arrived: stop here


async def _redact_one(
    service: RetentionService,
    event: TrackedEvent,
    reason: str,
    cutoff: int,
    in_flight: bool,
    result: RoomSweep,
) -> bool:
    """Archive and redact one event; False when the room's policy no longer allows it."""
    room_id, event_id = event.room_id, event.event_id
    raw: dict[str, Any] | None = None
    if in_flight or (service.archiver is not None and not event.archived):
        raw = await service.paced(lambda: service.history.fetch_event(room_id, event_id), result)
        if raw is None or is_redacted(raw):
            await _already_removed(service, event, raw, result)
            return True
    if service.archiver is not None and not event.archived and raw is not None:
        readable = await service.archiver.archive_event(event, raw)
        result.archived += 1
        result.unreadable += 0 if readable else 1
    limit = await service.removable_before(room_id, cutoff, result)
    if limit is None or event.origin_ts >= limit:
        return False
    await service.tracked.mark_removing([event_id])
    try:
        done = await service.paced(
            lambda: service.effects.redact(room_id, event_id, reason), result
        )
    except MForbidden:
        await service.tracked.mark_failed(event_id, "forbidden", service.clock.now())
        result.failed += 1
        return True
    except MNotFound:
        await service.tracked.mark_redacted(event_id)
        result.gone += 1
        return True
    assert done.event_id is not None
    await service.record_removal(event, done.event_id, result, method="redact")
    service.metrics.redactions.labels(cause="retention").inc()
    return True


async def _already_removed(
    service: RetentionService, event: TrackedEvent, raw: dict[str, Any] | None, result: RoomSweep
) -> None:
    """Gone before we got to it; if our own redaction did it (before a restart), record
    that redaction instead of sending another."""
    because = ((raw or {}).get("unsigned") or {}).get("redacted_because") or {}
    reason = (because.get("content") or {}).get("reason")
    if because.get("sender") == service.bot_user_id and is_retention_reason(reason):
        await service.record_removal(event, str(because["event_id"]), result, method="redact")
        return
    await service.tracked.mark_redacted(event.event_id)
    result.gone += 1
