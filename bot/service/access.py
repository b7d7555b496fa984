"""Role resolution: config lists and stored staff; room power only when
`roles.staff_power_level` is set."""

from __future__ import annotations

from mautrix.types import RoomID, UserID

from bot.config import Config
from bot.db.staff import StaffRepo
from bot.policy.roles import Role, role_of
from bot.service.ports import RoomReader


class AccessService:
    def __init__(self, config: Config, staff: StaffRepo, gateway: RoomReader) -> None:
        self.config = config
        self.staff = staff
        self.gateway = gateway

    async def _is_listed_staff(self, user_id: UserID) -> bool:
        return user_id in self.config.roles.staff or await self.staff.is_staff(user_id)

    async def role(self, room_id: RoomID, user_id: UserID) -> Role:
        roles = self.config.roles
        if user_id in roles.admins:
            return Role.ADMIN
        if await self._is_listed_staff(user_id):
            return Role.STAFF
        if roles.staff_power_level is None:
            return Role.PATIENT  # the default: room power never makes anyone staff
        power = await self.gateway.power_level(room_id, user_id)
        return role_of(
            user_id,
            admins=roles.admins,
            staff=(),
            power_level=power,
            staff_power_level=roles.staff_power_level,
        )

    async def is_staff_or_admin(self, user_id: UserID) -> bool:
        """Who a person is, regardless of any room: config admins, config or stored staff."""
        return user_id in self.config.roles.admins or await self._is_listed_staff(user_id)

    async def may_invite_bot(self, user_id: UserID) -> bool:
        """Invites are judged before the bot is in the room, so room power cannot count."""
        return user_id in self.config.roles.admins or await self._is_listed_staff(user_id)
