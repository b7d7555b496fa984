"""The foundation's commands: `help` and `status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bot.commands.registry import CommandContext, CommandRegistry, CommandSpec
from bot.policy.roles import Role


class StatusSource(Protocol):
    async def status_lines(self) -> list[str]: ...


class BuiltinServices(Protocol):
    registry: CommandRegistry
    prefix: str
    status: StatusSource


async def help_command(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: BuiltinServices = ctx.services
    lines = [f"Commands you can use here (your role: {ctx.role.label}):"]
    for spec in services.registry.visible_to(ctx.role):
        lines.append(f"• {services.prefix} {spec.usage} — {spec.summary}")
    return "\n".join(lines)


async def status_command(ctx: CommandContext, args: Mapping[str, Any]) -> str:
    services: BuiltinServices = ctx.services
    lines = await services.status.status_lines()
    # Set by the app when the bot's database role could rewrite the audit history (SPEC 5).
    role_warning = getattr(services, "role_warning", None)
    if isinstance(role_warning, str) and role_warning:
        lines = [f"⚠️ WARNING: {role_warning}", *lines]
    return "\n".join(lines)


def builtin_specs() -> list[CommandSpec]:
    return [
        CommandSpec("help", Role.ANYONE, "list the commands you may run", help_command),
        CommandSpec("status", Role.STAFF, "show the bot's health and progress", status_command),
    ]
