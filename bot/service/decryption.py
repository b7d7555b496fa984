"""Late keys: encrypted events that arrived before their megolm key wait in Postgres (still
encrypted) until the key comes, is requested, or the wait runs out."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import Any

from mautrix.errors import DecryptionError, SessionNotFound
from mautrix.types import EventID

from bot.clock import Clock
from bot.db.pending_decryption import PendingDecryption, PendingEvent
from bot.service.background import Backoff, Outage, run_forever
from bot.service.failures import is_transient
from bot.service.observers import BatchOutcome
from bot.service.pipeline import EventPipeline
from bot.service.ports import Decryptor

log = logging.getLogger("chaperone.decryption")


class DecryptionRetrier:
    def __init__(
        self,
        gateway: Decryptor,
        pipeline: EventPipeline,
        pending: PendingDecryption,
        clock: Clock,
        *,
        request_after: float = 2.0,
        give_up_after: float = 60.0,
        poll_interval: float = 0.25,
        backoff: Backoff | None = None,
    ) -> None:
        self.gateway = gateway
        self.pipeline = pipeline
        self.pending = pending
        self.clock = clock
        self.request_after = request_after
        self.give_up_after = give_up_after
        self.poll_interval = poll_interval
        self.outage = Outage(log, "Retrying pending decryptions", backoff)

    async def run(self) -> None:
        """Retry every `poll_interval`; while it fails (Postgres down), back off and log the
        outage once."""
        await run_forever(self.retry_once, interval=self.poll_interval, outage=self.outage)

    async def retry_once(self) -> None:
        now = self.clock.now()
        for row in await self.pending.all():
            try:
                await self._retry(row, now)
            except Exception as e:
                if is_transient(e):
                    raise
                # One event's trouble costs that event only, never the others waiting.
                failed = BatchOutcome(entries=[self.pipeline.event_failed(row.event, e)])
                await self._commit(row.event_id, failed)

    async def _retry(self, row: PendingEvent, now: datetime) -> None:
        raw = row.event
        if await self.gateway.session_known(row.room_id, row.session_id):
            await self._process(raw)
            return
        code = self.gateway.withheld_code(raw)
        if code is not None:
            await self._fail(raw, f"withheld: {code}", withheld_code=code)
            return
        age = (now - row.first_seen).total_seconds()
        if age >= self.give_up_after:
            await self._fail(raw, "key never arrived")
        elif age >= self.request_after and row.attempts == 0:
            log.info("Requesting the missing key for %s", row.event_id)
            await self.gateway.request_key(raw)
            await self.pending.reschedule(row.event_id, now, 1)

    async def _process(self, raw: dict[str, Any]) -> None:
        outcome = BatchOutcome()
        try:
            decrypted = await self.gateway.decrypt(raw)
        except (SessionNotFound, DecryptionError) as e:
            await self._fail(raw, type(e).__name__)
            return
        await self.pipeline.handle_plain_event(
            decrypted.raw, outcome, encrypted=True, trust=decrypted.trust
        )
        await self._commit(raw["event_id"], outcome)

    async def _fail(
        self, raw: dict[str, Any], reason: str, *, withheld_code: str | None = None
    ) -> None:
        log.warning(
            "Giving up decrypting %s in %s: %s", raw.get("event_id"), raw.get("room_id"), reason
        )
        outcome = BatchOutcome()
        await self.pipeline.undecryptable(raw, reason, outcome, withheld_code=withheld_code)
        await self._commit(raw["event_id"], outcome)

    async def _commit(self, event_id: EventID, outcome: BatchOutcome) -> None:
        unit = self.pipeline.unit_of(outcome).then(partial(self.pending.remove, event_id))
        await unit.commit()
        await self.pipeline.after_commit(outcome.entries)  # outbox, alerts, metrics
