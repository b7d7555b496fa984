"""The sync loop: our own loop around /sync so the position advances only after the batch's
audit rows are committed (mautrix's Syncer saves it before handlers run)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from bot.db.sync_state import SyncState
from bot.matrix.gateway import MatrixGateway
from bot.service.pipeline import EventPipeline

log = logging.getLogger("chaperone.sync")

LONG_POLL_MS = 30_000
# After this many failures in a row, the batch is retried event by event (see process_batch).
ISOLATE_AFTER_FAILURES = 5


class SyncLoop:
    def __init__(
        self,
        gateway: MatrixGateway,
        pipeline: EventPipeline,
        sync_state: SyncState,
        started_at: float,
    ) -> None:
        self.gateway = gateway
        self.pipeline = pipeline
        self.sync_state = sync_state
        self.started_at = started_at
        self.first_batch_seconds: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.batches = 0
        self.first_batch_done = asyncio.Event()

    async def run(self) -> None:
        account = self.gateway.user_id
        since = await self.sync_state.get(account)
        failures = 0
        while True:
            try:
                batch = await self.gateway.sync(since, LONG_POLL_MS if self.batches else 0)
                outcome = await self.pipeline.process_batch(
                    batch, isolate=failures >= ISOLATE_AFTER_FAILURES
                )
                await self.pipeline.commit(outcome, batch.next_batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                ref = secrets.token_hex(4).upper()
                self.last_error = f"{type(e).__name__} (ref {ref})"
                log.warning("Sync batch failed (ref %s), retry %d", ref, failures, exc_info=True)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            since = batch.next_batch
            failures = 0
            self.last_error = None
            self.last_success = time.monotonic()
            self.batches += 1
            if self.first_batch_seconds is None:
                self.first_batch_seconds = self.last_success - self.started_at
                log.info("First sync batch processed %.2f s after start", self.first_batch_seconds)
                self.first_batch_done.set()

    def lag_seconds(self) -> float | None:
        return None if self.last_success is None else time.monotonic() - self.last_success
