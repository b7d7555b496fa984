"""Management-room alerts from what was committed to the audit log (violations, posture drift
and fixes, disclosures, decryption failures, internal errors) and from the sync loop's health.

Working from committed audit rows means an alert is only sent for what is on the record, and
every feature that audits `policy.violation` (say) is announced without knowing about alerts.
"""

from __future__ import annotations

import asyncio
import logging

from bot.config import Config
from bot.db.audit import AuditEntry
from bot.db.rooms import RoomsRepo
from bot.matrix.gateway import MatrixGateway
from bot.metrics import Metrics
from bot.policy.alert_rules import alert_line, alert_message
from bot.service.alerts import Alerts
from bot.service.background import Outage, run_forever
from bot.service.sync_loop import SyncLoop

log = logging.getLogger("chaperone.alerts")


class AdminAlerts:
    def __init__(self, alerts: Alerts, metrics: Metrics) -> None:
        self.alerts = alerts
        self.metrics = metrics
        self.sync_failing = False
        self.watch_outage = Outage(log, "Watching the sync loop")

    async def on_committed(self, entries: list[AuditEntry]) -> None:
        """Count and announce the alert-worthy rows of one committed batch, in one notice."""
        lines = []
        for entry in entries:
            if entry.action == "decryption.failed":
                self.metrics.decryption_failures.inc()
            line = alert_line(
                entry.action,
                actor=entry.actor,
                room_id=entry.room_id,
                event_id=entry.event_id,
                subject=entry.subject,
                details=entry.details,
            )
            if line is not None:
                lines.append(line)
        message = alert_message(lines)
        if message is not None:
            await self.alerts.send(message)

    async def join_management_room(
        self, config: Config, gateway: MatrixGateway, rooms: RoomsRepo
    ) -> None:
        """At start: join `bot.management_room` if invited there and not in it yet."""
        room_id = config.bot.management_room
        if not room_id or await rooms.is_managed(room_id):
            return
        try:
            await gateway.join(room_id)
            log.info("Joined the management room %s", room_id)
        except Exception as e:
            log.info("Not in the management room %s yet (%s)", room_id, type(e).__name__)

    async def watch_sync(self, sync_loop: SyncLoop, interval: float = 5.0) -> None:
        """Announce once when the sync loop starts failing, and once when it recovers."""
        await asyncio.sleep(interval)
        await run_forever(
            lambda: self.check_sync(sync_loop), interval=interval, outage=self.watch_outage
        )

    async def check_sync(self, sync_loop: SyncLoop) -> None:
        error = sync_loop.last_error
        if error and not self.sync_failing:
            self.sync_failing = True
            await self.alerts.send(
                f"Processing events is failing: {error}. The bot retries with backoff and "
                "loses nothing; /ready reports it. See the log for the reference."
            )
        elif not error and self.sync_failing and sync_loop.last_success is not None:
            self.sync_failing = False
            await self.alerts.send("Processing events has recovered.")
