"""Composition root: builds every part, passes dependencies in, owns the start/stop order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
from mautrix.errors import MatrixConnectionError
from mautrix.util.async_db import Database

from bot import __version__
from bot.clock import Clock
from bot.commands import audit as audit_commands
from bot.commands import consent as consent_commands
from bot.commands import policy as policy_commands
from bot.commands import posture as posture_commands
from bot.commands import retention as retention_commands
from bot.commands import room as room_commands
from bot.commands import staff as staff_commands
from bot.commands import verify as verify_commands
from bot.commands.builtin import builtin_specs
from bot.commands.registry import CommandRegistry
from bot.commands.services import Services
from bot.config import Config
from bot.db.archive import MessageArchive
from bot.db.audit import AuditEntry, AuditLog
from bot.db.consent import ConsentRepo
from bot.db.consent_notices import ConsentNotices
from bot.db.database import Databases, EmbeddedPostgres, history_risk, open_databases
from bot.db.identity import IdentityStore
from bot.db.leader import LeaderLock
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
from bot.db.unit_of_work import record_audit
from bot.db.verification import VerificationRepo
from bot.matrix.effects import MatrixEffects
from bot.matrix.gateway import MatrixGateway
from bot.matrix.verification import VerificationMatrix
from bot.metrics import Metrics
from bot.service.access import AccessService
from bot.service.admin_alerts import AdminAlerts
from bot.service.alerts import Alerts
from bot.service.archive import Archiver
from bot.service.audit_checkpoints import AuditCheckpointer
from bot.service.audit_tools import AuditTools
from bot.service.background import Backoff
from bot.service.commands import CommandService
from bot.service.consent import ConsentService
from bot.service.consent_enforcement import ConsentObserver
from bot.service.consent_grants import ConsentGrants
from bot.service.consent_renewal import ConsentRenewal
from bot.service.decryption import DecryptionRetrier
from bot.service.events import Committed, EffectsQueued, EventBus, HistoryRecorded, PolicyChanged
from bot.service.observers import Observer
from bot.service.outbox import EffectQueue, EffectsOutbox
from bot.service.pipeline import EventPipeline
from bot.service.policy import PolicyService, defaults_from
from bot.service.posture import PostureService
from bot.service.retention import RetentionService
from bot.service.room_new import RoomCreator
from bot.service.staff import StaffService
from bot.service.sync_loop import SyncLoop
from bot.service.tracking import Backfiller, RetentionTracker
from bot.service.verification import VerificationService
from bot.service.withheld import WithheldNotices
from bot.web import BotParts, WebServer

log = logging.getLogger("chaperone")
T = TypeVar("T")

STOP_STEP_SECONDS = 10.0
# Waiting for Postgres or the homeserver at start: 1 s, doubling, at most 30 s.
START_BACKOFF = Backoff(initial=1.0, cap=30.0)


async def _within(what: str, step: Awaitable[object]) -> None:
    """One stop step, bounded; its failure is logged (class only) and the stop goes on."""
    try:
        await asyncio.wait_for(step, STOP_STEP_SECONDS)
    except TimeoutError:
        log.error("Stopping: %s did not finish within %g s; going on", what, STOP_STEP_SECONDS)
    except Exception as e:
        log.warning("Stopping: %s failed (%s); going on", what, type(e).__name__)


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background tasks and wait for them, bounded; name any that will not stop and
    the line it is stuck on (code locations only, never data)."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    stopped, stuck = await asyncio.wait(tasks, timeout=STOP_STEP_SECONDS)
    for task in stopped:
        if not task.cancelled():
            task.exception()  # already reported by run_until_stopped; retrieved, not lost
    for task in stuck:
        frames = task.get_stack(limit=8)
        where = " <- ".join(
            f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"
            for f in reversed(frames)
        )
        log.error(
            "Stopping: task %s ignored cancellation (at %s); going on", task.get_name(), where
        )


class Chaperone:
    """The running bot. `start()` → background tasks; `stop()` → orderly shutdown."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_at = time.monotonic()
        self.clock = Clock()  # the one clock every part is given
        self.embedded: EmbeddedPostgres | None = None
        self.dbs: Databases | None = None
        self.leader: LeaderLock | None = None
        self.role_warning: str | None = None  # set at start when the role could change history
        self.active = False  # True once this instance holds the lock and has started
        self.tasks: list[asyncio.Task[None]] = []
        self.registry = CommandRegistry(builtin_specs())
        self.metrics = Metrics()
        for spec in (*posture_commands.specs(), *staff_commands.specs(), *audit_commands.specs()):
            self.registry.register(spec)
        for spec in retention_commands.specs():
            self.registry.register(spec)
        for spec in verify_commands.specs():
            self.registry.register(spec)
        for spec in (
            *consent_commands.specs(),
            *policy_commands.specs(config.retention.minimum_seconds),
            *room_commands.specs(),
        ):
            self.registry.register(spec)
        self.web = WebServer(config.http, self.metrics, self.clock)
        self.bus = EventBus()  # how one flow hears what another committed
        self.started = asyncio.Event()  # set once start() is through (the demo waits for it)
        self._url = ""

    async def start(self) -> None:
        """The start-up sequence: HTTP first (so /health answers and /ready says why not yet),
        the database, the leader lock, the homeserver, every part built, then the work."""
        await self.web.start()
        main = await self._open_database()
        await self._become_leader()
        await self._connect_matrix(main)
        self._build(main)
        self._subscribe()
        await self.verification.start()
        await self.admin_alerts.join_management_room(self.config, self.gateway, self.rooms)
        await self._record_start()
        self.active = True
        self.tasks = self._background_tasks()
        self.web.attach(BotParts(main, self.audit, self.audit_tools, self.sync_loop))
        self.started.set()

    async def _open_database(self) -> Database:
        """The embedded Postgres when no URL is configured; the pools, retried while down."""
        url, owner_url = self.config.database.url, self.config.database.owner_url
        if not url:
            self.embedded = EmbeddedPostgres(Path(self.config.bot.data_dir))
            url = await self.embedded.astart()
            owner_url = self.embedded.owner_url
        self._url = url
        self.dbs = await self._until_up(
            "Postgres", lambda: open_databases(url, owner_url=owner_url or None)
        )
        self.role_warning = await history_risk(self.dbs.main)
        if self.role_warning:
            log.warning("WARNING: %s", self.role_warning)
        return self.dbs.main

    async def _become_leader(self) -> None:
        """A second instance waits here as a warm standby."""
        self.leader = LeaderLock(self._url)
        self.web.waiting_reason = "warm standby: another instance holds the database lock"
        await self.leader.acquire()
        self.web.waiting_reason = "starting"

    async def _connect_matrix(self, main: Database) -> None:
        assert self.dbs is not None
        self.gateway = MatrixGateway(self.config, self.dbs, IdentityStore(main))
        await self._until_up("the homeserver", lambda: self.gateway.client.versions(no_cache=True))
        await self.gateway.connect()
        self.effects = MatrixEffects(self.gateway, dry_run=self.config.bot.dry_run)
        await self._exempt_from_rate_limits()

    def _build(self, main: Database) -> None:
        """Every part, each given what it uses, in dependency order; no I/O. Flows hear about
        each other through `self.bus` (subscribed in `_subscribe`), not by setting callbacks
        on each other; observers are listed in the order the pipeline calls them."""
        config, clock, bus = self.config, self.clock, self.bus
        self.audit = AuditLog(main, config.audit.hmac_key)
        self.sync_state = SyncState(main)
        self.pending = PendingDecryption(main)
        self.rooms = RoomsRepo(main)
        self.staff = StaffRepo(main)
        self.alerts = Alerts(config, self.effects)
        self.access = AccessService(config, self.staff, self.gateway)
        self.policy = PolicyService(
            config, RoomPolicyRepo(main, defaults_from(config)), self.audit, bus
        )
        # Effects exactly once: queued with the batch, carried out after the commit.
        outbox_repo = OutboxRepo(main)
        self.effect_queue = EffectQueue(outbox_repo, self.audit, clock, bus)
        self.outbox = EffectsOutbox(outbox_repo, self.effects, self.audit, clock, self.alerts.send)
        self.room_creator = RoomCreator(config, self.effects, self.access, self.audit)
        self.posture = PostureService(
            config,
            self.gateway,
            self.effects,
            self.audit,
            self.policy,
            PostureRepo(main),
            self.rooms,
            bus,
            self.access,
            creations_settled=self.room_creator.settled,
        )
        # Consent: the flow, enforcement in the room, renewal and expiry checks.
        self.consent = ConsentService(
            config,
            ConsentRepo(main),
            MessageCounts(main),
            ConsentNotices(main),
            self.audit,
            self.access,
            self.gateway,
            self.effects,
            self.policy,
            clock,
            self.effect_queue,
        )
        self.consent_grants = ConsentGrants(
            config, self.consent.repo, self.audit, self.access, clock
        )
        self.consent_renewal = ConsentRenewal(self.consent)
        self.staff_admin = StaffService(
            config, self.staff, self.rooms, self.gateway, self.effects, self.audit
        )
        # Interactive verification: to-device events from mautrix, in-room ones as an
        # observer; the operator confirms on the console (chaperone verify).
        self.verification = VerificationService(
            config,
            VerificationMatrix(self.gateway),
            VerificationRepo(main),
            self.audit,
            self.access,
            self.alerts,
            clock,
        )
        management_room = config.bot.management_room
        self.checkpointer = AuditCheckpointer(
            self.audit,
            interval_seconds=config.audit.checkpoint_interval_seconds,
            checkpoint_file=config.audit.checkpoint_file,
            publish=(lambda text: self.effects.notice(management_room, text))
            if management_room
            else None,
        )
        self.audit_tools = AuditTools(self.audit, self.effects, self.checkpointer.known)
        # Retention: event metadata, back-fill, archive, the sweeper.
        tracked, retention_rooms = TrackedEvents(main), RetentionRooms(main)
        self.tracker = RetentionTracker(tracked, retention_rooms, config.bot.user_id)
        self.backfiller = Backfiller(
            self.gateway, tracked, retention_rooms, self.tracker.backfill_wanted, bus=bus
        )
        archiver = None
        if config.retention.archive_public_key:
            archiver = Archiver(
                config.retention.archive_public_key,
                self.gateway,
                MessageArchive(main),
                tracked,
                self.audit,
                clock,
            )
        self.retention = RetentionService(
            config,
            self.gateway,
            self.effects,
            self.policy,
            self.rooms,
            tracked,
            retention_rooms,
            self.audit,
            self.metrics,
            self.alerts,
            archiver,
            self.backfiller,
            clock=clock,
        )
        # Commands: what their handlers may use, typed (bot/commands/services.py).
        services = Services(
            registry=self.registry,
            prefix=config.bot.command_prefix,
            clock=clock,
            rooms=self.rooms,
            policy=self.policy,
            posture=self.posture,
            consent=self.consent,
            consent_grants=self.consent_grants,
            staff_admin=self.staff_admin,
            audit_tools=self.audit_tools,
            retention=self.retention,
            room_creator=self.room_creator,
            verification=self.verification,
            status=self,
            role_warning=self.role_warning,
        )
        self.commands = CommandService(
            config, self.registry, self.gateway, self.effects, self.access, services
        )
        self.observers: list[Observer] = [
            self.posture,
            ConsentObserver(self.consent, self.policy, self.access, self.effects, self.metrics),
            self.verification,
            self.tracker,
        ]
        self.pipeline = EventPipeline(
            config,
            self.gateway,
            self.audit,
            self.sync_state,
            self.pending,
            self.rooms,
            self.access,
            self.commands,
            self.observers,
            metrics=self.metrics,
            withheld_notices=WithheldNotices(clock),
            outbox=outbox_repo,
            clock=clock,
            bus=bus,
        )
        self.sync_loop = SyncLoop(self.gateway, self.pipeline, self.sync_state, self.started_at)
        self.retrier = DecryptionRetrier(self.gateway, self.pipeline, self.pending, clock)
        self.admin_alerts = AdminAlerts(self.alerts, self.metrics)

    def _subscribe(self) -> None:
        """Who hears what, after it was committed (bot/service/events.py), in this order."""
        bus = self.bus

        async def wake_outbox(_: EffectsQueued) -> None:
            self.outbox.wake()

        async def alert(committed: Committed) -> None:
            await self.admin_alerts.on_committed(committed.entries)

        async def track(committed: Committed) -> None:
            await self.tracker.on_committed(committed.entries)

        bus.subscribe(EffectsQueued, wake_outbox)
        bus.subscribe(Committed, alert)
        bus.subscribe(Committed, track)
        bus.subscribe(PolicyChanged, self.posture.on_policy_change)
        bus.subscribe(PolicyChanged, self.consent.on_policy_changed)
        bus.subscribe(PolicyChanged, self.retention.on_policy_changed)
        bus.subscribe(HistoryRecorded, self.retention.on_history_recorded)

    async def _record_start(self) -> None:
        await record_audit(
            self.audit,
            [
                AuditEntry(
                    actor="system",
                    action="bot.started",
                    subject=self.config.bot.user_id,
                    details={"version": __version__, "device_id": self.gateway.device_id},
                )
            ],
        )
        if self.role_warning:
            await self.alerts.send(f"WARNING: {self.role_warning}")
        await self.checkpointer.checkpoint("start")

    def _background_tasks(self) -> list[asyncio.Task[None]]:
        assert self.leader is not None
        work: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("sync", self.sync_loop.run()),
            ("outbox", self.outbox.run()),
            ("decryption-retry", self.retrier.run()),
            ("sync-watch", self.admin_alerts.watch_sync(self.sync_loop)),
            ("leader", self.leader.keep()),
            ("audit-checkpoint", self.checkpointer.run()),
            ("backfill", self.backfiller.run()),
            ("consent-check", self.consent_renewal.run()),
            ("verification", self.verification.run()),
            ("retention-sweep", self.retention.run(self.sync_loop.first_batch_done)),
        ]
        return [asyncio.create_task(coro, name=name) for name, coro in work]

    async def _exempt_from_rate_limits(self) -> None:
        """With an admin token the bot lifts its own rate limits; without one,
        `status` says when effects are paced by 429s."""
        if not self.config.homeserver.admin_token:
            return
        try:
            await self.effects.exempt_from_rate_limits()
        except Exception as e:
            log.warning(
                "Could not exempt the bot from the homeserver's rate limits (%s); its"
                " redactions and notices will be paced by 429s",
                type(e).__name__,
            )
        else:
            log.info("Exempted the bot's account from the homeserver's rate limits")

    async def _until_up(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Retry with backoff while `what` is unreachable at start; /ready says why."""
        failures = 0
        while True:
            try:
                return await attempt()
            except (
                OSError,
                asyncpg.PostgresError,
                aiohttp.ClientError,
                MatrixConnectionError,
                TimeoutError,
            ) as e:
                failures += 1
                self.web.waiting_reason = f"waiting for {what} ({type(e).__name__})"
                log.warning("%s is unreachable (%s); retry %d", what, type(e).__name__, failures)
                await asyncio.sleep(START_BACKOFF.delay(failures))

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        waiter = asyncio.create_task(stop.wait())
        starting = asyncio.create_task(self.start())
        try:
            # A standby waits inside start() for the lock; a stop request must still end it.
            await asyncio.wait([waiter, starting], return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                return
            starting.result()
            done, _ = await asyncio.wait(
                [waiter, *self.tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not waiter and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            waiter.cancel()
            await self.stop()

    async def stop(self) -> None:
        """Stop in the reverse order of start. Each step gets `STOP_STEP_SECONDS`: a step that
        hangs (a task deaf to cancellation, a pool waiting for a connection nobody returns) is
        logged with where it stands and skipped, so a SIGTERM always ends the process."""
        await _within("the HTTP server", self.web.stop())
        await _stop_tasks(self.tasks)
        self.tasks = []
        if self.active:
            await _within("the outbox", self.outbox.stop())  # the rest waits in Postgres
            self.active = False
            stopped = AuditEntry(
                actor="system", action="bot.stopped", subject=self.config.bot.user_id
            )
            await _within("the bot.stopped audit row", record_audit(self.audit, [stopped]))
            await _within("the audit checkpoint", self.checkpointer.checkpoint("stop"))
            await _within("the Matrix client", self.gateway.close())
        if self.dbs is not None:
            dbs, self.dbs = self.dbs, None
            # On timeout asyncpg terminates the pools' connections instead of waiting for them.
            await _within("the database pools", dbs.close())
        if self.leader is not None:
            leader, self.leader = self.leader, None
            await _within("the database lock", leader.release())
        if self.embedded is not None:
            embedded, self.embedded = self.embedded, None
            await _within("the embedded Postgres", embedded.astop())

    async def status_lines(self) -> list[str]:
        lag = self.sync_loop.lag_seconds()
        first = self.sync_loop.first_batch_seconds
        return [
            f"Chaperone {__version__} as {self.config.bot.user_id}, "
            f"device {self.gateway.device_id}",
            f"Up {time.monotonic() - self.started_at:.0f} s; first sync processed "
            + (f"{first:.2f} s after start" if first is not None else "not yet"),
            "Sync: "
            + (f"last batch {lag:.1f} s ago" if lag is not None else "not synced yet")
            + (f"; last error {self.sync_loop.last_error}" if self.sync_loop.last_error else ""),
            f"Managed rooms: {len(await self.rooms.managed())}",
            f"Messages waiting for keys: {len(await self.pending.all())}; "
            f"given up: {self.retrier.failures}",
            f"Management room: {self.config.bot.management_room or 'not configured'}; "
            f"HTTP on {self.config.http.host}:{self.web.port}",
            self.retention.status_line(),
            await self.consent_renewal.status_line(),
            await self.outbox.status_line(),
        ]
