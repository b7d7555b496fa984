"""What rooms are told about retention: the announcement before the first sweep, the
`m.room.retention` state (where the bot has the power), and the sweep result."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mautrix.types import RoomID

from bot.config import Config
from bot.db.retention_rooms import RetentionRooms
from bot.matrix.effects import MatrixEffects
from bot.policy.retention import announcement, effective_retention, state_content
from bot.policy.room_policy import RoomPolicy
from bot.service.failures import error_reference
from bot.service.policy import PolicyService
from bot.service.ports import RoomHistory
from bot.service.tracking import paced

if TYPE_CHECKING:
    from bot.service.retention import RoomSweep

log = logging.getLogger("chaperone.retention")

RETENTION_STATE = "m.room.retention"


class RoomNotices:
    def __init__(
        self,
        config: Config,
        history: RoomHistory,
        effects: MatrixEffects,
        rooms_state: RetentionRooms,
        policy: PolicyService,
        *,
        archived: bool,
    ) -> None:
        self.policy = policy
        self.history = history
        self.effects = effects
        self.rooms_state = rooms_state
        self.minimum = config.retention.minimum_seconds
        self.method = config.retention.method
        self.archived = archived
        self._publishing: dict[RoomID, asyncio.Lock] = {}
        self._announcing: dict[RoomID, asyncio.Lock] = {}

    async def announce(
        self,
        room_id: RoomID,
        policy: RoomPolicy,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """Tell the room its retention, once per value; raises if the room cannot be told
        (then nothing is removed there)."""
        retention = effective_retention(policy.retention_seconds, self.minimum)
        if retention is None:
            return
        # Check, post and record as one step per room: two callers (the back-fill finishing,
        # a sweep starting) must not both see "not told yet" and both post.
        async with self._announcing.setdefault(room_id, asyncio.Lock()):
            if await self.rooms_state.announced(room_id) == retention:
                return
            text = announcement(retention, archived=self.archived, method=self.method)
            await paced(lambda: self.effects.notice(room_id, text), on_wait=on_wait)
            await self.rooms_state.set_announced(room_id, retention)

    async def announce_safely(self, room_id: RoomID, policy: RoomPolicy) -> None:
        try:
            await self.announce(room_id, policy)
        except Exception as e:
            ref = error_reference()
            log.warning(
                "Could not announce retention in %s (%s, ref %s)", room_id, type(e).__name__, ref
            )
            log.debug("Announcing retention failed (ref %s)", ref, exc_info=True)

    async def publish(self, room_id: RoomID) -> None:
        """Publish `m.room.retention` for the room's current policy when it differs from what
        was published and the bot has the power; best effort (the sweep does not depend on it).
        One at a time per room, so a late publish never overwrites a newer policy's."""
        async with self._publishing.setdefault(room_id, asyncio.Lock()):
            await self._publish(room_id)

    async def _publish(self, room_id: RoomID) -> None:
        policy = await self.policy.get(room_id)
        content = state_content(
            policy.retention_seconds, minimum_seconds=self.minimum, legal_hold=policy.legal_hold
        )
        try:
            current = await self.rooms_state.published(room_id)
            if current == content or (current is None and not content):
                return
            if not await self.history.may_send_state(room_id, RETENTION_STATE):
                log.info("No power to publish %s in %s", RETENTION_STATE, room_id)
                return
            done = await paced(lambda: self.effects.set_state(room_id, RETENTION_STATE, content))
            if done.done:
                await self.rooms_state.set_published(room_id, content)
        except Exception as e:
            ref = error_reference()
            log.warning(
                "Could not publish %s in %s (%s, ref %s)",
                RETENTION_STATE,
                room_id,
                type(e).__name__,
                ref,
            )
            log.debug("Publishing %s failed (ref %s)", RETENTION_STATE, ref, exc_info=True)


def sweep_report(results: Sequence[RoomSweep], seconds: float) -> str:
    """The one-paragraph result posted where a sweep was asked for."""
    if len(results) == 1:
        r = results[0]
        if r.held and not r.removed:
            return "Retention sweep: legal hold is on here; nothing was removed."
        if r.off:
            return "Retention sweep: retention is off here; nothing was removed."
    removed = sum(r.removed for r in results)
    parts = [f"{removed} message{'s' if removed != 1 else ''} removed"]
    archived = sum(r.archived for r in results)
    if archived:
        parts.append(f"{archived} archived first")
    for label, count in (
        ("failed", sum(r.failed for r in results)),
        ("already gone", sum(r.gone for r in results)),
        ("would be removed (dry run)", sum(r.due for r in results if r.dry_run)),
        ("rooms held", sum(1 for r in results if r.held)),
        ("rate-limit waits", sum(r.waits for r in results)),
    ):
        if count:
            parts.append(f"{count} {label}")
    problems = [f"{r.room_id}: {r.error}" for r in results if r.error]
    problems += [f"{r.room_id}: no power to redact" for r in results if r.no_power]
    rooms = f" in {len(results)} rooms" if len(results) != 1 else ""
    text = f"Retention sweep done{rooms} in {seconds:.1f} s: " + ", ".join(parts) + "."
    if problems:
        text += " Problems: " + "; ".join(problems) + "."
    return text
