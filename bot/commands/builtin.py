"""The foundation's commands: `help` and `status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bot.commands import formatting as fmt
from bot.commands.registry import CommandContext, CommandRegistry, CommandSpec, Reply
from bot.policy.roles import Role


class StatusSource(Protocol):
    async def status_lines(self) -> list[str]: ...


class BuiltinServices(Protocol):
    registry: CommandRegistry
    prefix: str
    status: StatusSource


async def help_command(ctx: CommandContext, args: Mapping[str, Any]) -> Reply:
    services: BuiltinServices = ctx.services
    specs = services.registry.visible_to(ctx.role)
    return help_reply(ctx.role.label, services.prefix, [(s.usage, s.summary) for s in specs])


def help_reply(role: str, prefix: str, commands: list[tuple[str, str]]) -> Reply:
    """The commands a role may run: one a line, the command itself as code in the HTML."""
    title = f"Commands you can use here (your role: {role}):"
    lines = [title] + [f"• {prefix} {usage} — {summary}" for usage, summary in commands]
    html = fmt.paragraph(fmt.esc(title)) + fmt.items(
        f"{fmt.code(f'{prefix} {usage}')} — {fmt.esc(summary)}" for usage, summary in commands
    )
    return Reply("\n".join(lines), html)


async def status_command(ctx: CommandContext, args: Mapping[str, Any]) -> Reply:
    services: BuiltinServices = ctx.services
    lines = await services.status.status_lines()
    title = "Status:"
    # Set by the app when the bot's database role could rewrite the audit history (SPEC 5).
    role_warning = getattr(services, "role_warning", None)
    if isinstance(role_warning, str) and role_warning:
        lines = [f"⚠️ WARNING: {role_warning}", *lines]
    reply = fmt.listing([title, *lines])
    return Reply("\n".join(lines), reply.html)


def builtin_specs() -> list[CommandSpec]:
    return [
        CommandSpec("help", Role.ANYONE, "list the commands you may run", help_command),
        CommandSpec("status", Role.STAFF, "show the bot's health and progress", status_command),
    ]
