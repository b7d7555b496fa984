"""`staff add|remove|list` and `offboard` (admin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    user_id_arg,
)
from bot.policy.roles import Role
from bot.service.staff import StaffService


class StaffServices(Protocol):
    staff_admin: StaffService


USER = Arg(
    "user", user_id_arg, help="a Matrix user ID like @name:server", expected=USER_ID_EXPECTED
)


async def staff_add(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: StaffServices = ctx.services
    return await services.staff_admin.add(args["user"], actor=ctx.sender, event_id=ctx.event_id)


async def staff_remove(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: StaffServices = ctx.services
    return await services.staff_admin.remove(args["user"], actor=ctx.sender, event_id=ctx.event_id)


async def staff_list(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: StaffServices = ctx.services
    return "\n".join(await services.staff_admin.list_lines())


async def offboard(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: StaffServices = ctx.services
    user = args["user"]
    if user == services.staff_admin.config.bot.user_id:
        raise CommandUsageError("user: that is the bot itself; expected a member of staff")
    return await services.staff_admin.offboard(user, actor=ctx.sender, event_id=ctx.event_id)


def specs() -> list[CommandSpec]:
    return [
        CommandSpec(
            "staff add", Role.ADMIN, "add a member of staff (every room)", staff_add, (USER,)
        ),
        CommandSpec(
            "staff remove", Role.ADMIN, "remove someone from the staff list", staff_remove, (USER,)
        ),
        CommandSpec("staff list", Role.ADMIN, "list the staff", staff_list),
        CommandSpec(
            "offboard",
            Role.ADMIN,
            "remove a departing member of staff from every managed room and the staff list",
            offboard,
            (USER,),
        ),
    ]
