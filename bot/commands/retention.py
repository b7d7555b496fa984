"""Retention commands: `hold on|off`, `retention sweep`, `retention preview`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.commands.registry import (
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    NoArgs,
    choice_arg,
)
from bot.policy.roles import Role
from bot.service.retention import SweepRequest


@dataclass(frozen=True, kw_only=True)
class HoldArgs:
    state: str
    """`on` or `off`."""


def _whole_management_room(ctx: CommandContext) -> bool:
    """In the management room without room=!id: the command is about every managed room."""
    return ctx.in_management_room and ctx.room_id == ctx.reply_room_id


async def hold_command(ctx: CommandContext, args: HoldArgs) -> str:
    if _whole_management_room(ctx):
        raise CommandUsageError("name the room: hold on|off room=!id:server")
    policy = ctx.services.policy
    await policy.set(ctx.room_id, "legal_hold", args.state, ctx.sender, ctx.event_id)
    if args.state == "on":
        return "⚖️ Legal hold is on: retention removes nothing in this room until it is off."
    return "Legal hold is off: retention applies in this room again."


async def sweep_command(ctx: CommandContext, args: NoArgs) -> str:
    services = ctx.services
    if _whole_management_room(ctx):
        rooms = await services.rooms.managed()
        services.retention.request(
            SweepRequest(None, requested_by=ctx.sender, reply_room=ctx.reply_room_id)
        )
        return f"Retention sweep of all {len(rooms)} managed rooms started; the result follows."
    _, line = await services.retention.preview(ctx.room_id)
    services.retention.request(
        SweepRequest((ctx.room_id,), requested_by=ctx.sender, reply_room=ctx.reply_room_id)
    )
    return f"Retention sweep started. {line} The result follows."


async def preview_command(ctx: CommandContext, args: NoArgs) -> str:
    services = ctx.services
    if not _whole_management_room(ctx):
        _, line = await services.retention.preview(ctx.room_id)
        return line
    lines, total = [], 0
    for room_id in await services.rooms.managed():
        preview, line = await services.retention.preview(room_id)
        if preview.count:
            lines.append(f"• {room_id}: {line}")
            total += preview.count
    return "\n".join([f"Next sweep would remove {total} message(s) in all rooms.", *lines])


def specs() -> list[CommandSpec[Any]]:
    return [
        CommandSpec(
            "hold",
            Role.ADMIN,
            "put this room's legal hold on or off (suspends retention)",
            hold_command,
            positional=(
                Arg(
                    "on|off",
                    choice_arg("on", "off"),
                    expected="expected on or off",
                    attr="state",
                ),
            ),
            args=HoldArgs,
        ),
        CommandSpec(
            "retention sweep",
            Role.ADMIN,
            "archive and remove the messages older than the room's retention, now",
            sweep_command,
            args=NoArgs,
        ),
        CommandSpec(
            "retention preview",
            Role.STAFF,
            "show what the next retention sweep would remove (changes nothing)",
            preview_command,
            args=NoArgs,
        ),
    ]
