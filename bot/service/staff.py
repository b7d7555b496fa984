"""Staff and access: `staff add|remove|list` and `offboard` (remove a departing member of staff
from every managed room and from the staff list)."""

from __future__ import annotations

import logging
from functools import partial

from mautrix.types import EventID, RoomID, UserID

from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.rooms import RoomsRepo
from bot.db.staff import StaffRepo
from bot.db.unit_of_work import UnitOfWork
from bot.matrix.effects import MatrixEffects
from bot.service.failures import error_reference
from bot.service.ports import RoomReader

log = logging.getLogger("chaperone.staff")

OFFBOARD_REASON = "Offboarded: no longer on the clinic's staff"
REMOVABLE = ("join", "invite", "knock")


class StaffService:
    def __init__(
        self,
        config: Config,
        staff: StaffRepo,
        rooms: RoomsRepo,
        gateway: RoomReader,
        effects: MatrixEffects,
        audit: AuditLog,
    ) -> None:
        self.config = config
        self.staff = staff
        self.rooms = rooms
        self.gateway = gateway
        self.effects = effects
        self.audit = audit

    async def add(self, user_id: UserID, *, actor: UserID, event_id: EventID | None) -> str:
        # Decided by a read under the audit lock (every staff change holds it), then the
        # unit stores the row `staff.added` and the addition, in that order.
        async with UnitOfWork.locked(self.audit) as unit:
            added = user_id not in await self.staff.list()
            if added:
                unit.record(self._entry("staff.added", user_id, actor, event_id))
                unit.then(partial(self.staff.add, user_id, actor))
        if not added:
            return f"{user_id} is already on the staff list."
        return f"{user_id} is now staff in every room (and may invite the bot)."

    async def remove(self, user_id: UserID, *, actor: UserID, event_id: EventID | None) -> str:
        async with UnitOfWork.locked(self.audit) as unit:
            removed = user_id in await self.staff.list()
            if removed:
                unit.record(self._entry("staff.removed", user_id, actor, event_id))
                unit.then(partial(self.staff.remove, user_id))
        text = (
            f"{user_id} is no longer on the staff list."
            if removed
            else f"{user_id} was not on the staff list."
        )
        return text + self._config_note(user_id)

    async def list_lines(self) -> list[str]:
        stored = await self.staff.list()
        configured = list(self.config.roles.staff)
        if not stored and not configured:
            return ["No staff listed. Add someone with `staff add @user:server`."]
        lines = ["Staff:"]
        lines += [f"• {u} (roles.staff in the config)" for u in configured]
        lines += [f"• {u} (added with staff add)" for u in stored if u not in configured]
        level = self.config.roles.staff_power_level
        lines.append(
            "Room power never makes anyone staff (roles.staff_power_level is off)."
            if level is None
            else f"Members with power level ≥ {level} in a room are staff there too."
        )
        return lines

    async def offboard(self, user_id: UserID, *, actor: UserID, event_id: EventID | None) -> str:
        """Remove the user from every managed room they are in, and from the staff list."""
        removed_rooms: list[RoomID] = []
        would_remove: list[RoomID] = []
        failed: dict[RoomID, str] = {}
        # The homeserver's list too: a room joined moments ago may not be recorded yet.
        managed = await self.rooms.managed()
        joined = await self.gateway.joined_rooms()
        for room_id in managed + [r for r in joined if r not in managed]:
            if await self.gateway.membership(room_id, user_id) not in REMOVABLE:
                continue
            try:
                result = await self.effects.kick(room_id, user_id, OFFBOARD_REASON)
            except Exception as e:
                ref = error_reference()
                log.warning("Could not remove %s from %s (ref %s)", user_id, room_id, ref)
                failed[room_id] = f"{type(e).__name__}, ref {ref}"
                continue
            (removed_rooms if result.done else would_remove).append(room_id)
        async with UnitOfWork.locked(self.audit) as unit:
            was_staff = user_id in await self.staff.list()
            unit.record(
                AuditEntry(
                    actor=actor,
                    action="staff.offboarded",
                    event_id=event_id,
                    subject=user_id,
                    details={
                        "rooms": removed_rooms,
                        "failed": sorted(failed),
                        "dry_run_rooms": would_remove,
                        "removed_from_staff_list": was_staff,
                    },
                )
            )
            unit.then(partial(self.staff.remove, user_id))
        lines = [f"Offboarded {user_id}:"]
        lines.append(
            f"removed from {len(removed_rooms)} room(s)"
            + (": " + ", ".join(removed_rooms) if removed_rooms else "")
        )
        if would_remove:
            lines.append("dry-run, would remove from: " + ", ".join(would_remove))
        for room_id, why in failed.items():
            lines.append(f"❌ could not remove from {room_id} ({why}); the bot may lack power")
        lines.append("removed from the staff list" if was_staff else "was not on the staff list")
        note = self._config_note(user_id).strip()
        if note:
            lines.append(note)
        return "\n".join(lines)

    def _config_note(self, user_id: UserID) -> str:
        roles = self.config.roles
        where = [
            n for n, ids in (("admins", roles.admins), ("staff", roles.staff)) if user_id in ids
        ]
        if not where:
            return ""
        keys = " and ".join(f"roles.{n}" for n in where)
        return f" They are still listed in {keys} in the config: remove them there and restart."

    @staticmethod
    def _entry(
        action: str, user_id: UserID, actor: UserID, event_id: EventID | None
    ) -> AuditEntry:
        return AuditEntry(actor=actor, action=action, event_id=event_id, subject=user_id)
