"""How one flow hears about another: a small typed event bus, for what happens AFTER a commit.

Two ways in, kept apart on purpose:

- **Observers** (`bot/service/observers.py`) take part in a sync batch: they add audit rows,
  writes and effects to its `BatchOutcome`, which the pipeline commits as one unit of work
  (`bot/db/unit_of_work.py`). They decide what the batch stores, in order, inside its
  transaction.
- **The bus** carries what has already been committed: `Committed` rows (alerts, metrics, the
  tracker's back-fill), `EffectsQueued` (the outbox wakes), a `PolicyChanged` (posture,
  consent and retention react), a room's `HistoryRecorded` (retention publishes its state). A
  handler cannot change what was stored; it can only act on it.

Handlers are awaited in subscription order (the composition root, `bot/app.py`, subscribes
them); a failing handler is logged with an error reference and does not stop the others or
reach the publisher (what was committed stays committed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mautrix.types import RoomID

from bot.db.audit import AuditEntry
from bot.policy.room_policy import RoomPolicy
from bot.service.failures import error_reference

log = logging.getLogger("chaperone.events")

E = TypeVar("E")
Handler = Callable[[E], Awaitable[None]]


@dataclass(frozen=True)
class Committed:
    """Audit rows just committed (a sync batch, a retried decryption, a posture fix or check)."""

    entries: list[AuditEntry]


@dataclass(frozen=True)
class EffectsQueued:
    """Effects were just committed to the outbox."""


@dataclass(frozen=True)
class PolicyChanged:
    """A room policy field changed (committed with its audit row)."""

    room_id: RoomID
    field: str
    old: RoomPolicy
    new: RoomPolicy


@dataclass(frozen=True)
class HistoryRecorded:
    """A room's history was back-filled (the bot joined, or its retention changed)."""

    room_id: RoomID


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Any], list[Handler[Any]]] = {}

    def subscribe(self, event_type: type[E], handler: Handler[E]) -> None:
        self._handlers.setdefault(event_type, []).append(handler)

    async def publish(self, event: object) -> None:
        """Await each handler of the event's type in subscription order; never raises."""
        for handler in self._handlers.get(type(event), ()):
            try:
                await handler(event)
            except Exception as e:
                log.warning(
                    "A %s handler failed (%s, ref %s)",
                    type(event).__name__,
                    type(e).__name__,
                    error_reference(),
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
