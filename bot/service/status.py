"""What `!chaperone status` reports: the bot, its sync, rooms, queues, retention, consent checks.

Built before the command service (which answers `status`), so it reads the loops' progress
from what they update (`SyncLoop`'s figures, the metrics), never from the loops' owners.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import __version__
from bot.config import Config
from bot.db.pending_decryption import PendingDecryption
from bot.db.rooms import RoomsRepo
from bot.metrics import Metrics
from bot.service.consent_renewal import ConsentRenewal
from bot.service.outbox import EffectsOutbox
from bot.service.retention import RetentionService
from bot.service.sync_loop import SyncLoop


class StatusReport:
    def __init__(
        self,
        config: Config,
        device_id: str,
        sync_loop: SyncLoop,
        rooms: RoomsRepo,
        pending: PendingDecryption,
        metrics: Metrics,
        retention: RetentionService,
        consent_renewal: ConsentRenewal,
        outbox: EffectsOutbox,
        http_port: Callable[[], int | None],
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.sync_loop = sync_loop
        self.rooms = rooms
        self.pending = pending
        self.metrics = metrics
        self.retention = retention
        self.consent_renewal = consent_renewal
        self.outbox = outbox
        self.http_port = http_port

    async def status_lines(self) -> list[str]:
        sync = self.sync_loop
        lag = sync.lag_seconds()
        first = sync.first_batch_seconds
        given_up = self.metrics.registry.get_sample_value("chaperone_decryption_failures_total")
        return [
            f"Chaperone {__version__} as {self.config.bot.user_id}, device {self.device_id}",
            f"Up {time.monotonic() - sync.started_at:.0f} s; first sync processed "
            + (f"{first:.2f} s after start" if first is not None else "not yet"),
            "Sync: "
            + (f"last batch {lag:.1f} s ago" if lag is not None else "not synced yet")
            + (f"; last error {sync.last_error}" if sync.last_error else ""),
            f"Managed rooms: {len(await self.rooms.managed())}",
            f"Messages waiting for keys: {len(await self.pending.all())}; "
            f"given up: {int(given_up or 0)}",
            f"Management room: {self.config.bot.management_room or 'not configured'}; "
            f"HTTP on {self.config.http.host}:{self.http_port()}",
            self.retention.status_line(),
            await self.consent_renewal.status_line(),
            await self.outbox.status_line(),
        ]
