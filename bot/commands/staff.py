"""`staff add|remove|list` and `offboard` (admin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mautrix.types import UserID

from bot.commands.registry import (
    USER_ID_EXPECTED,
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    NoArgs,
    user_id_arg,
)
from bot.policy.roles import Role

USER = Arg(
    "user", user_id_arg, help="a Matrix user ID like @name:server", expected=USER_ID_EXPECTED
)


@dataclass(frozen=True, kw_only=True)
class UserArgs:
    user: UserID


async def staff_add(ctx: CommandContext, args: UserArgs) -> str:
    staff = ctx.services.staff_admin
    return await staff.add(args.user, actor=ctx.sender, event_id=ctx.event_id)


async def staff_remove(ctx: CommandContext, args: UserArgs) -> str:
    staff = ctx.services.staff_admin
    return await staff.remove(args.user, actor=ctx.sender, event_id=ctx.event_id)


async def staff_list(ctx: CommandContext, args: NoArgs) -> str:
    return "\n".join(await ctx.services.staff_admin.list_lines())


async def offboard(ctx: CommandContext, args: UserArgs) -> str:
    staff = ctx.services.staff_admin
    if args.user == staff.config.bot.user_id:
        raise CommandUsageError("user: that is the bot itself; expected a member of staff")
    return await staff.offboard(args.user, actor=ctx.sender, event_id=ctx.event_id)


def specs() -> list[CommandSpec[Any]]:
    return [
        CommandSpec(
            "staff add",
            Role.ADMIN,
            "add a member of staff (every room)",
            staff_add,
            (USER,),
            args=UserArgs,
        ),
        CommandSpec(
            "staff remove",
            Role.ADMIN,
            "remove someone from the staff list",
            staff_remove,
            (USER,),
            args=UserArgs,
        ),
        CommandSpec("staff list", Role.ADMIN, "list the staff", staff_list, args=NoArgs),
        CommandSpec(
            "offboard",
            Role.ADMIN,
            "remove a departing member of staff from every managed room and the staff list",
            offboard,
            (USER,),
            args=UserArgs,
        ),
    ]
