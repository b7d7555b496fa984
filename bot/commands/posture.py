"""`posture` (staff) and `posture fix` (admin): a room's settings against what a clinic needs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bot.commands import formatting as fmt
from bot.commands.registry import CommandContext, CommandSpec, Reply
from bot.policy.roles import Role
from bot.service.posture import PostureService, report_lines


class PostureServices(Protocol):
    posture: PostureService


async def posture_command(ctx: CommandContext, args: Mapping[str, Any]) -> Reply:
    services: PostureServices = ctx.services
    return fmt.listing(report_lines(await services.posture.report(ctx.room_id)))


async def posture_fix_command(ctx: CommandContext, args: Mapping[str, Any]) -> Reply:
    services: PostureServices = ctx.services
    lines = await services.posture.fix(ctx.room_id, actor=ctx.sender, event_id=ctx.event_id)
    return fmt.listing(lines)


def specs() -> list[CommandSpec]:
    return [
        CommandSpec(
            "posture",
            Role.STAFF,
            "check the room's settings: encryption, join rule, history, guests, server ACL, "
            "patients with power",
            posture_command,
        ),
        CommandSpec(
            "posture fix",
            Role.ADMIN,
            "fix the room settings the bot has the power to change",
            posture_fix_command,
        ),
    ]
