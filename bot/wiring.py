"""Every part of the running bot, made in dependency order by one function, without I/O.

`build_parts` is what `bot.app.Chaperone.start` calls once the database, the leader lock and
the homeserver are there. Each part is given what it uses; none is handed the app, and none
sets a callback on another: flows hear about each other through the `EventBus` (subscribed in
`bot.app`), and the observers are listed in the order the pipeline calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Database

from bot.clock import Clock
from bot.commands.registry import CommandRegistry
from bot.commands.services import Services
from bot.config import Config
from bot.db.archive import MessageArchive
from bot.db.audit import AuditLog
from bot.db.consent import ConsentRepo
from bot.db.consent_notices import ConsentNotices
from bot.db.message_counts import MessageCounts
from bot.db.outbox import OutboxRepo
from bot.db.pending_decryption import PendingDecryption
from bot.db.posture import PostureRepo
from bot.db.retention_rooms import RetentionRooms
from bot.db.room_policy import RoomPolicyRepo
from bot.db.rooms import RoomsRepo
from bot.db.staff import StaffRepo
from bot.db.sync_state import SyncState
from bot.db.tracked_events import TrackedEvents
from bot.db.verification import VerificationRepo
from bot.matrix.effects import MatrixEffects
from bot.matrix.gateway import MatrixGateway
from bot.matrix.history import MatrixHistory
from bot.matrix.verification import VerificationMatrix
from bot.metrics import Metrics
from bot.service.access import AccessService
from bot.service.admin_alerts import AdminAlerts
from bot.service.alerts import Alerts
from bot.service.archive import Archiver
from bot.service.audit_checkpoints import AuditCheckpointer
from bot.service.audit_tools import AuditTools
from bot.service.commands import CommandService
from bot.service.consent import ConsentService
from bot.service.consent_enforcement import ConsentObserver
from bot.service.consent_grants import ConsentGrants
from bot.service.consent_renewal import ConsentRenewal
from bot.service.decryption import DecryptionRetrier
from bot.service.events import EventBus
from bot.service.outbox import EffectQueue, EffectsOutbox
from bot.service.pipeline import EventPipeline
from bot.service.policy import PolicyService, defaults_from
from bot.service.posture import PostureService
from bot.service.retention import RetentionService
from bot.service.room_new import RoomCreator
from bot.service.staff import StaffService
from bot.service.status import StatusReport
from bot.service.sync_loop import SyncLoop
from bot.service.tracking import Backfiller, RetentionTracker
from bot.service.verification import VerificationService
from bot.service.withheld import WithheldNotices
from bot.web import WebServer


@dataclass(frozen=True)
class Given:
    """What the parts are made from: settings, the one clock and bus, and what start-up
    opened (the database, the homeserver connection)."""

    config: Config
    clock: Clock
    bus: EventBus
    db: Database
    gateway: MatrixGateway
    effects: MatrixEffects
    registry: CommandRegistry
    metrics: Metrics
    web: WebServer
    started_at: float
    role_warning: str | None


@dataclass(frozen=True)
class Parts:
    audit: AuditLog
    rooms: RoomsRepo
    pending: PendingDecryption
    alerts: Alerts
    access: AccessService
    policy: PolicyService
    outbox: EffectsOutbox
    posture: PostureService
    consent: ConsentService
    consent_renewal: ConsentRenewal
    verification: VerificationService
    checkpointer: AuditCheckpointer
    audit_tools: AuditTools
    tracker: RetentionTracker
    backfiller: Backfiller
    retention: RetentionService
    commands: CommandService
    pipeline: EventPipeline
    sync_loop: SyncLoop
    retrier: DecryptionRetrier
    admin_alerts: AdminAlerts


def build_parts(given: Given) -> Parts:
    """Every part, each given what it uses, in dependency order."""
    config, clock, bus, db = given.config, given.clock, given.bus, given.db
    gateway, effects = given.gateway, given.effects
    audit = AuditLog(db, config.audit.hmac_key)
    sync_state, pending, rooms, staff = (
        SyncState(db),
        PendingDecryption(db),
        RoomsRepo(db),
        StaffRepo(db),
    )
    alerts = Alerts(config, effects)
    access = AccessService(config, staff, gateway)
    policy = PolicyService(config, RoomPolicyRepo(db, defaults_from(config)), audit, bus)
    # Effects exactly once: queued with the batch, carried out after the commit.
    outbox_repo = OutboxRepo(db)
    effect_queue = EffectQueue(outbox_repo, audit, clock, bus)
    outbox = EffectsOutbox(outbox_repo, effects, audit, clock, alerts.send)
    room_creator = RoomCreator(config, effects, access, audit)
    posture = PostureService(
        config,
        gateway,
        effects,
        audit,
        policy,
        PostureRepo(db),
        rooms,
        bus,
        access,
        creations_settled=room_creator.settled,
    )
    # Consent: the flow, enforcement in the room, renewal and expiry checks.
    consent = ConsentService(
        config,
        ConsentRepo(db),
        MessageCounts(db),
        ConsentNotices(db),
        audit,
        access,
        gateway,
        effects,
        policy,
        clock,
        effect_queue,
    )
    consent_grants = ConsentGrants(config, consent.repo, audit, access, clock)
    consent_renewal = ConsentRenewal(consent)
    staff_admin = StaffService(config, staff, rooms, gateway, effects, audit)
    # Interactive verification: to-device events from mautrix, in-room ones as an observer;
    # the operator confirms on the console (chaperone verify).
    verification = VerificationService(
        config, VerificationMatrix(gateway), VerificationRepo(db), audit, access, alerts, clock
    )
    management_room = config.bot.management_room
    checkpointer = AuditCheckpointer(
        audit,
        interval_seconds=config.audit.checkpoint_interval_seconds,
        checkpoint_file=config.audit.checkpoint_file,
        publish=(lambda text: effects.notice(management_room, text)) if management_room else None,
    )
    audit_tools = AuditTools(audit, effects, checkpointer.known)
    # Retention: event metadata, back-fill, archive, the sweeper.
    tracked, retention_rooms = TrackedEvents(db), RetentionRooms(db)
    history = MatrixHistory(gateway)
    tracker = RetentionTracker(tracked, retention_rooms, config.bot.user_id)
    backfiller = Backfiller(history, tracked, retention_rooms, tracker.backfill_wanted, bus=bus)
    archiver = None
    if config.retention.archive_public_key:
        archiver = Archiver(
            config.retention.archive_public_key,
            config.bot.user_id,
            gateway,
            MessageArchive(db),
            tracked,
            audit,
            clock,
        )
    retention = RetentionService(
        config,
        history,
        effects,
        policy,
        rooms,
        tracked,
        retention_rooms,
        audit,
        given.metrics,
        alerts,
        archiver,
        backfiller,
        clock=clock,
    )
    # The sync loop is made before what it runs (the pipeline, given to `run`), so `status`
    # can report on it.
    sync_loop = SyncLoop(gateway, sync_state, given.started_at)
    status = StatusReport(
        config,
        gateway.device_id,
        sync_loop,
        rooms,
        pending,
        given.metrics,
        retention,
        consent_renewal,
        outbox,
        http_port=lambda: given.web.port,
    )
    # Commands: what their handlers may use, typed (bot/commands/services.py).
    services = Services(
        registry=given.registry,
        prefix=config.bot.command_prefix,
        clock=clock,
        rooms=rooms,
        policy=policy,
        posture=posture,
        consent=consent,
        consent_grants=consent_grants,
        staff_admin=staff_admin,
        audit_tools=audit_tools,
        retention=retention,
        room_creator=room_creator,
        verification=verification,
        status=status,
        role_warning=given.role_warning,
    )
    commands = CommandService(config, given.registry, gateway, access, services)
    pipeline = EventPipeline(
        config,
        gateway,
        audit,
        sync_state,
        pending,
        rooms,
        access,
        commands,
        # The order the pipeline calls them in.
        [
            posture,
            ConsentObserver(consent, policy, access, effects, given.metrics),
            verification,
            tracker,
        ],
        metrics=given.metrics,
        withheld_notices=WithheldNotices(clock),
        outbox=outbox_repo,
        clock=clock,
        bus=bus,
    )
    return Parts(
        audit=audit,
        rooms=rooms,
        pending=pending,
        alerts=alerts,
        access=access,
        policy=policy,
        outbox=outbox,
        posture=posture,
        consent=consent,
        consent_renewal=consent_renewal,
        verification=verification,
        checkpointer=checkpointer,
        audit_tools=audit_tools,
        tracker=tracker,
        backfiller=backfiller,
        retention=retention,
        commands=commands,
        pipeline=pipeline,
        sync_loop=sync_loop,
        retrier=DecryptionRetrier(gateway, pipeline, pending, clock),
        admin_alerts=AdminAlerts(alerts, given.metrics),
    )
