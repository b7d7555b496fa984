"""Alerts to the management room (`bot.management_room`): short, with references, no content."""

from __future__ import annotations

import logging

from bot.config import Config
from bot.matrix.effects import MatrixEffects

log = logging.getLogger("chaperone.alerts")


class Alerts:
    def __init__(self, config: Config, effects: MatrixEffects) -> None:
        self.room_id = config.bot.management_room
        self.effects = effects

    async def send(self, text: str) -> None:
        """Post to the management room when one is configured; never raises."""
        log.info("Alert: %s", text)
        if not self.room_id:
            return
        try:
            await self.effects.notice(self.room_id, f"🚨 {text}")
        except Exception as e:
            # One line: the alert text above is what matters, and an outage that stops it
            # going out (Postgres or the homeserver down) is reported by the failing loop.
            log.warning("Could not post an alert to the management room (%s)", type(e).__name__)
            log.debug("Posting the alert failed", exc_info=True)
