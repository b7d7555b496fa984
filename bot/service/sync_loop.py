"""The sync loop: our own loop around /sync so the position advances only after the batch's
audit rows are committed (mautrix's Syncer saves it before handlers run)."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.db.sync_state import SyncState
from bot.service.background import Backoff, Outage
from bot.service.pipeline import EventPipeline
from bot.service.ports import SyncSource

log = logging.getLogger("chaperone.sync")

LONG_POLL_MS = 30_000
# A batch that fails this often in a row (each time with what looked like an outage) is tried
# event by event, in case the error was one event's after all.
ISOLATE_AFTER_FAILURES = 5


class SyncLoop:
    def __init__(
        self,
        gateway: SyncSource,
        sync_state: SyncState,
        started_at: float,
    ) -> None:
        self.gateway = gateway
        self.sync_state = sync_state
        self.started_at = started_at
        self.first_batch_seconds: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.batches = 0
        self.first_batch_done = asyncio.Event()
        # One warning per outage (the tracebacks only at debug), one line when it recovers.
        self.outage = Outage(log, "Syncing", Backoff(initial=1.0, cap=30.0))

    async def run(self, pipeline: EventPipeline) -> None:
        """Sync and hand each batch to `pipeline` until cancelled. (The pipeline is given
        here, not when the loop is made: what reports on the loop is built before it.)"""
        account = self.gateway.user_id
        since = await self.sync_state.get(account)
        failures = 0
        while True:
            try:
                batch = await self.gateway.sync(since, LONG_POLL_MS if self.batches else 0)
                received = time.monotonic()
                if failures >= ISOLATE_AFTER_FAILURES:
                    await pipeline.handle_batch_event_by_event(batch)
                else:
                    await pipeline.handle_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                delay = self.outage.failed(e)
                self.last_error = f"{type(e).__name__} (ref {self.outage.reference})"
                await asyncio.sleep(delay)
                continue
            self.outage.succeeded()
            since = batch.next_batch
            failures = 0
            self.last_error = None
            self.last_success = time.monotonic()
            self.batches += 1
            if self.first_batch_seconds is None:
                self.first_batch_seconds = self.last_success - self.started_at
                log.info(
                    "First sync batch processed %.2f s after start (received at %.2f s, "
                    "%d timeline events)",
                    self.first_batch_seconds,
                    received - self.started_at,
                    sum(len(events) for events in batch.timelines.values()),
                )
                self.first_batch_done.set()

    def lag_seconds(self) -> float | None:
        return None if self.last_success is None else time.monotonic() - self.last_success
