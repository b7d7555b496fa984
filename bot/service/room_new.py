"""`room new`: the bot creates a room that passes every posture check, invites the
patient and staff, and records `room.created`. The terms follow when the patient joins (the
consent flow), the room policy is the configured defaults until someone sets it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mautrix.types import EventID, RoomID, UserID

from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.unit_of_work import record_audit
from bot.matrix.effects import MatrixEffects
from bot.policy.posture import server_of
from bot.policy.room_new import matrix_to, plan_new_room
from bot.service.access import AccessService

log = logging.getLogger("chaperone.rooms")

SETTLE_SECONDS = 30.0


class RoomRequestError(ValueError):
    """The request cannot be met; the message names the argument, never its text."""


@dataclass(frozen=True)
class CreatedRoom:
    room_id: RoomID | None
    """None when dry-run skipped the creation."""
    link: str | None
    patient: UserID
    staff: tuple[UserID, ...]
    """Everyone invited as staff, the caller first."""
    name: str | None
    room_version: str
    encrypted_with_acl: bool


class RoomCreator:
    def __init__(
        self,
        config: Config,
        effects: MatrixEffects,
        access: AccessService,
        audit: AuditLog,
    ) -> None:
        self.config = config
        self.effects = effects
        self.access = access
        self.audit = audit
        self.bot_user_id = config.bot.user_id
        self._creating = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def settled(self, timeout: float = SETTLE_SECONDS) -> None:
        """Wait until no room is half-created. createRoom sends the initial state after the
        bot's join: a sync processed meanwhile (e.g. a late-decrypted command runs beside the
        sync loop) would see the room without it and report drift that is not there."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def create(
        self,
        *,
        caller: UserID,
        patient: UserID,
        staff: Sequence[UserID],
        name: str | None,
        event_id: EventID | None,
    ) -> CreatedRoom:
        """Create the room, invite, audit; RoomRequestError when the people named do not fit."""
        if patient in (caller, self.bot_user_id):
            raise RoomRequestError("patient: name the patient, not yourself or the bot")
        if await self.access.is_staff_or_admin(patient):
            raise RoomRequestError("patient: that user is staff or an admin; name the patient")
        others = [u for u in dict.fromkeys(staff) if u != caller]
        for n, user_id in enumerate(others, start=1):
            if user_id in (patient, self.bot_user_id) or not await self.access.is_staff_or_admin(
                user_id
            ):
                # Power 50 for someone not on the staff list would be a patient holding power.
                raise RoomRequestError(
                    f"staff: user {n} is not on the staff list; add them with staff add first"
                )
        room_version = await self.effects.default_room_version()
        allowed = self.config.roles.allowed_servers
        plan = plan_new_room(
            bot_user_id=self.bot_user_id,
            patient=patient,
            caller=caller,
            staff=others,
            name=name,
            room_version=room_version,
            allowed_servers=allowed,
        )
        self._creating += 1
        self._idle.clear()
        try:
            result = await self.effects.create_room(
                room_version=room_version,
                invite=plan.invite,
                initial_state=plan.initial_state,
                power_levels=plan.power_levels,
                name=plan.name,
            )
        finally:
            self._creating -= 1
            if not self._creating:
                self._idle.set()
        # A created room's result carries its ID (as plain text) in `event_id`.
        room_id = RoomID(result.event_id) if result.done and result.event_id is not None else None
        invited_staff = (caller, *others)
        await record_audit(
            self.audit,
            [
                AuditEntry(
                    actor=caller,
                    action="room.created",
                    room_id=room_id,
                    event_id=event_id,
                    subject=patient,
                    details={
                        "invited": list(plan.invite),
                        "staff": list(invited_staff),
                        "room_version": room_version,
                        "name": name,
                        "server_acl": bool(allowed),
                        "dry_run": not result.done,
                    },
                )
            ],
        )
        if room_id is not None:
            log.info("Created room %s (version %s)", room_id, room_version)
        return CreatedRoom(
            room_id=room_id,
            link=matrix_to(room_id, server_of(self.bot_user_id)) if room_id else None,
            patient=patient,
            staff=invited_staff,
            name=name,
            room_version=room_version,
            encrypted_with_acl=bool(allowed),
        )
