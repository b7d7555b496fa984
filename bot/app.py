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
from bot.config import Config
from bot.db.audit import AuditEntry
from bot.db.database import Databases, EmbeddedPostgres, history_risk, open_databases
from bot.db.identity import IdentityStore
from bot.db.leader import LeaderLock
from bot.db.unit_of_work import record_audit
from bot.matrix.effects import MatrixEffects
from bot.matrix.gateway import MatrixGateway
from bot.metrics import Metrics
from bot.service.background import Backoff
from bot.service.events import Committed, EffectsQueued, EventBus, HistoryRecorded, PolicyChanged
from bot.web import BotParts, WebServer
from bot.wiring import Given, Parts, build_parts

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
        self.parts = parts = build_parts(self._given(main))
        self._subscribe(parts)
        await parts.verification.start()
        await parts.admin_alerts.join_management_room(self.config, self.gateway, parts.rooms)
        await self._record_start(parts)
        self.active = True
        self.tasks = self._background_tasks(parts)
        self.web.attach(BotParts(main, parts.audit, parts.audit_tools, parts.sync_loop))
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

    def _given(self, main: Database) -> Given:
        return Given(
            config=self.config,
            clock=self.clock,
            bus=self.bus,
            db=main,
            gateway=self.gateway,
            effects=self.effects,
            registry=self.registry,
            metrics=self.metrics,
            web=self.web,
            started_at=self.started_at,
            role_warning=self.role_warning,
        )

    def _subscribe(self, parts: Parts) -> None:
        """Who hears what, after it was committed (bot/service/events.py), in this order."""
        bus = self.bus

        async def wake_outbox(_: EffectsQueued) -> None:
            parts.outbox.wake()

        async def alert(committed: Committed) -> None:
            await parts.admin_alerts.on_committed(committed.entries)

        async def track(committed: Committed) -> None:
            await parts.tracker.on_committed(committed.entries)

        bus.subscribe(EffectsQueued, wake_outbox)
        bus.subscribe(Committed, alert)
        bus.subscribe(Committed, track)
        bus.subscribe(PolicyChanged, parts.posture.on_policy_change)
        bus.subscribe(PolicyChanged, parts.consent.on_policy_changed)
        bus.subscribe(PolicyChanged, parts.retention.on_policy_changed)
        bus.subscribe(HistoryRecorded, parts.retention.on_history_recorded)

    async def _record_start(self, parts: Parts) -> None:
        await record_audit(
            parts.audit,
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
            await parts.alerts.send(f"WARNING: {self.role_warning}")
        await parts.checkpointer.checkpoint("start")

    def _background_tasks(self, parts: Parts) -> list[asyncio.Task[None]]:
        assert self.leader is not None
        work: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("sync", parts.sync_loop.run(parts.pipeline)),
            ("outbox", parts.outbox.run()),
            ("decryption-retry", parts.retrier.run()),
            ("sync-watch", parts.admin_alerts.watch_sync(parts.sync_loop)),
            ("leader", self.leader.keep()),
            ("audit-checkpoint", parts.checkpointer.run()),
            ("backfill", parts.backfiller.run()),
            ("consent-check", parts.consent_renewal.run()),
            ("verification", parts.verification.run()),
            ("retention-sweep", parts.retention.run(parts.sync_loop.first_batch_done)),
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
            parts = self.parts
            await _within("the outbox", parts.outbox.stop())  # the rest waits in Postgres
            self.active = False
            stopped = AuditEntry(
                actor="system", action="bot.stopped", subject=self.config.bot.user_id
            )
            await _within("the bot.stopped audit row", record_audit(parts.audit, [stopped]))
            await _within("the audit checkpoint", parts.checkpointer.checkpoint("stop"))
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
