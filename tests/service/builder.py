"""The services of the event pipeline wired as bot/app.py wires them, with the in-memory
Matrix (tests/fakes/matrix.py) in place of the gateway and a FakeClock.

Copied from the composition root rather than imported from it (app.py builds everything, a
homeserver connection included). Observers: consent enforcement only, so each test sees the
rows of the pipeline and consent; posture, verification and retention tracking have tests of
their own. Commands: the built-in, consent and policy commands, with the services they use;
the others are NOT_REACHED (None), so a test that reached one would fail.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database

from bot.clock import FakeClock
from bot.commands import consent as consent_commands
from bot.commands import policy as policy_commands
from bot.commands.builtin import builtin_specs
from bot.commands.registry import CommandRegistry
from bot.commands.services import Services
from bot.config import Config, parse_config
from bot.db.audit import AuditLog
from bot.db.consent import ConsentRepo
from bot.db.consent_notices import ConsentNotices
from bot.db.message_counts import MessageCounts
from bot.db.outbox import OutboxRepo
from bot.db.pending_decryption import PendingDecryption
from bot.db.room_policy import RoomPolicyRepo
from bot.db.rooms import RoomsRepo
from bot.db.staff import StaffRepo
from bot.db.sync_state import SyncState
from bot.matrix.gateway import SyncBatch
from bot.metrics import Metrics
from bot.service.access import AccessService
from bot.service.commands import CommandService
from bot.service.consent import ConsentService
from bot.service.consent_enforcement import ConsentObserver
from bot.service.consent_grants import ConsentGrants
from bot.service.events import PolicyChanged
from bot.service.observers import Observer
from bot.service.outbox import EffectQueue, EffectsOutbox
from bot.service.pipeline import EventPipeline
from bot.service.policy import PolicyService, defaults_from
from bot.service.withheld import WithheldNotices
from tests.fakes.matrix import FakeEffects, FakeMatrix, new_event_id
from tests.unit.test_config import VALID

BOT = UserID("@chaperone:clinic.test")
ADMIN = UserID("@admin:clinic.test")
STAFF = UserID("@therapist:clinic.test")
PATIENT = UserID("@patient:clinic.test")
ROOM = RoomID("!care:clinic.test")
HMAC_KEY = "hmac-key-0123456789abcdef"  # VALID's audit.hmac_key
# A Monday, 10:00 in America/New_York: inside the default contact hours (Mon-Fri 09-17).
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
NOT_REACHED = cast(Any, None)


def service_config(**defaults: str) -> Config:
    data = copy.deepcopy(VALID)
    data["defaults"] = {"consent": "required", "enforcement": "redact", **defaults}
    return parse_config(data, {}, Path("/srv/chaperone"))


@dataclass
class ServiceBot:
    """The wired services, and helpers to feed them events and read what they stored."""

    config: Config
    db: Database
    audit: AuditLog
    clock: FakeClock
    matrix: FakeMatrix
    effects: FakeEffects
    pipeline: EventPipeline
    policy: PolicyService
    consent: ConsentService
    grants: ConsentGrants
    outbox: EffectsOutbox
    metrics: Metrics
    observers: list[Observer]
    _batches: int = field(default=0)

    # -- events ----------------------------------------------------------------------------

    def message(
        self,
        sender: UserID,
        body: str = "hello",
        *,
        room_id: RoomID = ROOM,
        event_type: str = "m.room.message",
        content: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A plain timeline event, sent now by the clock."""
        return {
            "type": event_type,
            "event_id": new_event_id(),
            "room_id": room_id,
            "sender": sender,
            "origin_server_ts": int(self.clock.now().timestamp() * 1000),
            "content": content if content is not None else {"msgtype": "m.text", "body": body},
        }

    def encrypted(self, sender: UserID, body: str = "hello", **kw: Any) -> dict[str, Any]:
        """The same, encrypted: what decrypt() returns is the plain message."""
        return self.matrix.encrypted(self.message(sender, body, **kw))

    def member(
        self,
        target: UserID,
        membership: str,
        *,
        prev: str | None = None,
        room_id: RoomID = ROOM,
    ) -> dict[str, Any]:
        event = self.message(target, room_id=room_id, event_type="m.room.member")
        event["content"] = {"membership": membership}
        event["state_key"] = target
        if prev is not None:
            event["unsigned"] = {"prev_content": {"membership": prev}}
        return event

    def batch(
        self, *events: dict[str, Any], invites: dict[str, dict[str, Any]] | None = None
    ) -> SyncBatch:
        self._batches += 1
        batch = SyncBatch(next_batch=f"s{self._batches}", raw={}, invites=dict(invites or {}))
        for event in events:
            batch.timelines.setdefault(event["room_id"], []).append(event)
        return batch

    async def handle(self, *events: dict[str, Any]) -> SyncBatch:
        """One sync batch of `events`, handled and committed."""
        batch = self.batch(*events)
        await self.pipeline.handle_batch(batch)
        return batch

    # -- what was stored -------------------------------------------------------------------

    async def rows(self, action: str, **where: str) -> list[dict[str, Any]]:
        """Audit rows of `action` (filtered by column), oldest first, details parsed."""
        conditions = ["action = $1"] + [f"{k} = ${i}" for i, k in enumerate(where, start=2)]
        records = await self.db.fetch(
            f"SELECT * FROM audit_log WHERE {' AND '.join(conditions)} ORDER BY seq",
            action,
            *where.values(),
        )
        return [_parsed(r) for r in records]

    async def actions(self, event_id: str) -> list[str]:
        """The audit actions recorded about `event_id`, in order."""
        records = await self.db.fetch(
            "SELECT action FROM audit_log WHERE event_id = $1 ORDER BY seq", event_id
        )
        return [r["action"] for r in records]

    async def queued(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Outbox rows (effects decided, waiting or done), oldest first."""
        records = await self.db.fetch("SELECT * FROM outbox ORDER BY id")
        return [_parsed(r) for r in records if kind is None or r["kind"] == kind]

    async def set_policy(self, field_name: str, value: str, room_id: RoomID = ROOM) -> None:
        await self.policy.set(room_id, field_name, value, ADMIN)


def _parsed(record: Any) -> dict[str, Any]:
    row = dict(record)
    for key in ("details", "payload", "on_done"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def build(
    db: Database,
    audit: AuditLog,
    *,
    config: Config | None = None,
    observers: Sequence[Observer] = (),
    dry_run: bool = False,
) -> ServiceBot:
    config = config or service_config()
    clock = FakeClock(START)
    matrix = FakeMatrix(BOT)
    effects = FakeEffects(dry_run=dry_run)
    access = AccessService(config, StaffRepo(db), matrix)
    policy = PolicyService(config, RoomPolicyRepo(db, defaults_from(config)), audit)
    outbox_repo = OutboxRepo(db)
    queue = EffectQueue(outbox_repo, audit, clock)
    consent = ConsentService(
        config,
        ConsentRepo(db),
        MessageCounts(db),
        ConsentNotices(db),
        audit,
        access,
        matrix,
        effects,
        policy,
        clock,
        queue,
    )
    grants = ConsentGrants(config, consent.repo, audit, access, clock)
    metrics = Metrics()
    all_observers: list[Observer] = [
        ConsentObserver(consent, policy, access, effects, metrics),
        *observers,
    ]
    policy.bus.subscribe(PolicyChanged, consent.on_policy_changed)
    registry = CommandRegistry(builtin_specs())
    for spec in (
        *consent_commands.specs(),
        *policy_commands.specs(config.retention.minimum_seconds),
    ):
        registry.register(spec)
    services = Services(
        registry=registry,
        prefix=config.bot.command_prefix,
        clock=clock,
        rooms=RoomsRepo(db),
        policy=policy,
        posture=NOT_REACHED,
        consent=consent,
        consent_grants=grants,
        staff_admin=NOT_REACHED,
        audit_tools=NOT_REACHED,
        retention=NOT_REACHED,
        room_creator=NOT_REACHED,
        verification=NOT_REACHED,
        status=NOT_REACHED,
        role_warning=None,
    )
    commands = CommandService(config, registry, matrix, access, services)
    pipeline = EventPipeline(
        config,
        matrix,
        audit,
        SyncState(db),
        PendingDecryption(db),
        RoomsRepo(db),
        access,
        commands,
        all_observers,
        metrics=metrics,
        withheld_notices=WithheldNotices(clock),
        outbox=outbox_repo,
        clock=clock,
    )

    async def no_alert(text: str) -> None:
        return None

    outbox = EffectsOutbox(outbox_repo, effects, audit, clock, no_alert)
    return ServiceBot(
        config=config,
        db=db,
        audit=audit,
        clock=clock,
        matrix=matrix,
        effects=effects,
        pipeline=pipeline,
        policy=policy,
        consent=consent,
        grants=grants,
        outbox=outbox,
        metrics=metrics,
        observers=all_observers,
    )
