"""Telling a room that a sender's app withholds keys from the bot, at most once per
sender device per day."""

from __future__ import annotations

from typing import Any

from mautrix.types import RoomID, UserID

from bot.clock import Clock
from bot.db.outbox import QueuedEffect
from bot.service.outbox import queued_notice

WITHHELD_NOTICE = (
    "I cannot read messages from {sender}'s device {device}: their app withheld the encryption "
    "key from me ({code}). To fix it, verify the bot from that app — ask a clinic administrator "
    "to confirm the emoji on the server — (or turn off 'never send encrypted messages to "
    "unverified sessions'), then send the message again."
)
ONE_DAY = 86_400.0
DEVICE_ID_SHOWN = 64  # a device ID is short; a longer one is cut before it is repeated


class WithheldNotices:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._told: dict[tuple[UserID, str], float] = {}  # (sender, device) -> when

    def notice_for(self, raw: dict[str, Any], code: str) -> QueuedEffect | None:
        """The notice for this event's sender device, unless one was queued today."""
        now = self.clock.monotonic()
        self._told = {k: t for k, t in self._told.items() if now - t < ONE_DAY}
        sender = UserID(str(raw.get("sender", "")))
        content = raw.get("content")
        device = content.get("device_id") if isinstance(content, dict) else None
        device = device[:DEVICE_ID_SHOWN] if isinstance(device, str) else "?"
        if (sender, device) in self._told:
            return None
        self._told[(sender, device)] = now
        text = WITHHELD_NOTICE.format(sender=sender, device=device, code=code)
        return queued_notice(
            RoomID(str(raw["room_id"])),
            text,
            cause=f"withheld:{raw.get('event_id')}",
            mentions=[sender],
        )
