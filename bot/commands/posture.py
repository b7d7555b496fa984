"""`posture` (staff) and `posture fix` (admin): a room's settings against what a clinic needs."""

from __future__ import annotations

from bot.commands import formatting as fmt
from bot.commands.registry import CommandContext, CommandSpec, NoArgs, Reply
from bot.policy.roles import Role
from bot.service.posture import report_lines


async def posture_command(ctx: CommandContext, args: NoArgs) -> Reply:
    return fmt.listing(report_lines(await ctx.services.posture.report(ctx.room_id)))


async def posture_fix_command(ctx: CommandContext, args: NoArgs) -> Reply:
    posture = ctx.services.posture
    lines = await posture.fix(ctx.room_id, actor=ctx.sender, event_id=ctx.event_id)
    return fmt.listing(lines)


def specs() -> list[CommandSpec[NoArgs]]:
    return [
        CommandSpec(
            "posture",
            Role.STAFF,
            "check the room's settings: encryption, join rule, history, guests, server ACL, "
            "patients with power",
            posture_command,
            args=NoArgs,
        ),
        CommandSpec(
            "posture fix",
            Role.ADMIN,
            "fix the room settings the bot has the power to change",
            posture_fix_command,
            args=NoArgs,
        ),
    ]
