"""`retention.method: purge`: Synapse's admin purge-history API deletes the room's history
before a point from the server's database. Each due message is archived first; afterwards each
is looked up, and only those the server no longer has are recorded as removed."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from mautrix.types import RoomID

from bot.matrix.history import is_redacted

if TYPE_CHECKING:
    from bot.service.retention import RetentionService, RoomSweep

# Every due event at once: a purge acts on a point in the room, not on single events.
MAX_EVENTS_PER_PURGE = 1_000_000


class PurgeFailed(RuntimeError):
    """Synapse reported the purge as failed (its error text is not content)."""


async def purge_room(
    service: RetentionService, room_id: RoomID, cutoff: int, retry_before: int, result: RoomSweep
) -> None:
    due = await service.tracked.due(room_id, cutoff, retry_before, MAX_EVENTS_PER_PURGE)
    if not due:
        return
    history = service.history
    if service.archiver is not None:
        for event in due:
            if event.archived:
                continue
            raw = await service.paced(
                partial(history.fetch_event, room_id, event.event_id), result
            )
            if raw is None or is_redacted(raw):
                continue  # nothing left to archive; the look-up below records it
            readable = await service.archiver.archive_event(event, raw)
            result.archived += 1
            result.unreadable += 0 if readable else 1
    limit = await service.removable_before(room_id, cutoff, result)
    if limit is None:
        return  # a legal hold arrived while archiving: no purge
    due = [e for e in due if e.origin_ts < limit]
    if not due:
        return
    # The purge keeps the point event and everything after it.
    point = await service.tracked.first_at_or_after(room_id, limit) or due[-1].event_id
    await service.tracked.mark_removing([e.event_id for e in due])
    started = await service.paced(lambda: service.effects.purge_history(room_id, point), result)
    if not started.done or started.event_id is None:
        return
    purge_id = started.event_id
    while True:
        status, error = await service.paced(lambda: history.purge_status(purge_id), result)
        if status == "complete":
            break
        if status == "failed":
            raise PurgeFailed(f"Synapse purge {purge_id} failed: {error}")
        await asyncio.sleep(service.purge_poll_seconds)
    for event in due:
        raw = await service.paced(partial(history.fetch_event, room_id, event.event_id), result)
        if raw is None:
            await service.record_removal(
                event,
                purge_id,
                result,
                method="purge",
                audit_event_id=event.event_id,
                extra={"purge_id": purge_id},
            )
            service.metrics.redactions.labels(cause="retention").inc()
