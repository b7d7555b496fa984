"""How feature services hook into the event pipeline without the pipeline knowing them.

An observer appends audit entries to the batch outcome and may queue writes that must commit
in the same transaction as the batch's audit rows and sync position (for example event
metadata). Effects (notices, redactions) are queued too, as outbox rows carried out after the
commit (bot.service.outbox), so a retried or replayed batch never repeats one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from mautrix.types import RoomID

from bot.db.audit import AuditEntry
from bot.db.outbox import QueuedEffect
from bot.db.unit_of_work import Write
from bot.matrix.facts import MembershipFact, MessageFact


@dataclass
class BatchOutcome:
    """What one batch produced: audit rows, transactional writes, events waiting for keys,
    effects to carry out once it committed."""

    entries: list[AuditEntry] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    effects: list[QueuedEffect] = field(default_factory=list)
    audited: set[tuple[str, str]] | None = None
    """(event_id, action) pairs already in the audit log for the batch's events, read once at
    its start; None: ask the log each time (events handled one by one)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Per-batch scratch space for observers (key: the observer's name), e.g. what a batch
    changed that is not committed yet; gone with the batch, so a retried batch starts clean."""


class Observer:
    """Base with no-op hooks; a feature overrides the ones it needs."""

    async def read_ahead(self, room_ids: Collection[RoomID]) -> None:
        """Before a batch's events: read at once what the batch's rooms will need (kept in the
        batch memo, `bot/batch_scope.py`), instead of a query per room as events come."""

    async def on_event(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        """Every timeline event the bot sees (decrypted when it could be), state included."""

    async def on_encrypted(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        """An encrypted timeline event as received, before decryption is tried, so events the
        bot can never read are seen too (no plaintext here)."""

    async def on_message(self, fact: MessageFact, outcome: BatchOutcome) -> None:
        """A message from a human that is not a command to the bot."""

    async def on_membership(self, fact: MembershipFact, outcome: BatchOutcome) -> None:
        """A membership change, after the pipeline recorded it."""

    async def on_state(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        """A state event (any type), e.g. for room posture."""
