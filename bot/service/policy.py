"""Room policy: read with defaults, change with validation, audit and listeners."""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from typing import Any

from mautrix.types import EventID, RoomID, UserID

from bot.batch_scope import forget, in_batch, keep, kept, once_per_batch
from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.room_policy import RoomPolicyRepo
from bot.db.unit_of_work import UnitOfWork
from bot.policy.room_policy import RoomPolicy, parse_policy_value
from bot.service.events import EventBus, PolicyChanged


def defaults_from(config: Config) -> RoomPolicy:
    """The policy of a room no admin has changed: the config's `defaults` section."""
    return config.defaults


class PolicyService:
    def __init__(
        self,
        config: Config,
        repo: RoomPolicyRepo,
        audit: AuditLog,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.repo = repo
        self.audit = audit
        # Told each change once committed (PolicyChanged): posture, consent, retention react.
        self.bus = bus if bus is not None else EventBus()

    async def get(self, room_id: RoomID) -> RoomPolicy:
        return await once_per_batch(("policy", room_id), lambda: self.repo.get(room_id))

    async def read_ahead(self, room_ids: Collection[RoomID]) -> None:
        """The policies of a batch's rooms in one query, kept for the batch (`get` then reads
        them from the memo); those already kept are not read again."""
        wanted = [room_id for room_id in room_ids if kept(("policy", room_id)) is None]
        if not in_batch() or not wanted:
            return
        for room_id, policy in (await self.repo.get_many(wanted)).items():
            keep(("policy", room_id), policy)

    def parse(self, field: str, text: str) -> Any:
        """Validate first: a bad value raises ValueError and nothing is recorded."""
        return parse_policy_value(
            field, text, retention_minimum=self.config.retention.minimum_seconds
        )

    async def set(
        self,
        room_id: RoomID,
        field: str,
        text: str,
        actor: UserID,
        event_id: EventID | None = None,
    ) -> RoomPolicy:
        """Store the new value and audit it (`legal_hold.changed` or `policy.changed`)."""
        value = self.parse(field, text)
        forget("policy")
        old = await self.repo.get(room_id)
        new = old.with_value(field, value)
        action = "legal_hold.changed" if field == "legal_hold" else "policy.changed"
        entry = AuditEntry(
            actor=actor,
            action=action,
            room_id=room_id,
            event_id=event_id,
            details={"field": field, "old": old.value_text(field), "new": new.value_text(field)},
        )
        # One unit: the audit row first, then the new value (the lock order, bot/db/unit_of_work).
        await (
            UnitOfWork(self.audit, [entry])
            .then(partial(self.repo.set, room_id, field, value, actor))
            .commit()
        )
        await self.bus.publish(PolicyChanged(room_id, field, old, new))
        return new
