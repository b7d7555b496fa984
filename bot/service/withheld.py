"""Telling a room that a sender's app withholds keys from the bot (SPEC 11), at most once per
sender device per day."""

from __future__ import annotations

import logging
import time
from typing import Any

from bot.matrix.effects import MatrixEffects

log = logging.getLogger("chaperone.withheld")

WITHHELD_NOTICE = (
    "I cannot read messages from {sender}'s device {device}: their app withheld the encryption "
    "key from me ({code}). To fix it, verify the bot's device from that app (or turn off "
    "'never send encrypted messages to unverified sessions'), then send the message again."
)
ONE_DAY = 86_400.0


class WithheldNotices:
    def __init__(self, effects: MatrixEffects) -> None:
        self.effects = effects
        self._told: dict[tuple[str, str], float] = {}  # (sender, device) -> when

    async def tell(self, raw: dict[str, Any], code: str) -> None:
        """Post the notice for this event's sender device unless it was posted today."""
        now = time.monotonic()
        self._told = {k: t for k, t in self._told.items() if now - t < ONE_DAY}
        sender = raw.get("sender", "")
        device = raw.get("content", {}).get("device_id", "?")
        if (sender, device) in self._told:
            return
        self._told[(sender, device)] = now
        text = WITHHELD_NOTICE.format(sender=sender, device=device, code=code)
        try:
            await self.effects.notice(raw["room_id"], text, mentions=[sender])
        except Exception:
            log.warning("Could not post the withheld-key notice in %s", raw.get("room_id"))
