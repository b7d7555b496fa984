"""The foundation's commands: `help` and `status`."""

from __future__ import annotations

from bot.commands import formatting as fmt
from bot.commands.registry import CommandContext, CommandSpec, NoArgs, Reply
from bot.policy.roles import Role


async def help_command(ctx: CommandContext, args: NoArgs) -> Reply:
    services = ctx.services
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


async def status_command(ctx: CommandContext, args: NoArgs) -> Reply:
    services = ctx.services
    lines = await services.status.status_lines()
    title = "Status:"
    # Set by the app when the bot's database role could rewrite the audit history.
    if services.role_warning:
        lines = [f"⚠️ WARNING: {services.role_warning}", *lines]
    reply = fmt.listing([title, *lines])
    return Reply("\n".join(lines), reply.html)


def builtin_specs() -> list[CommandSpec[NoArgs]]:
    return [
        CommandSpec(
            "help", Role.ANYONE, "list the commands you may run", help_command, args=NoArgs
        ),
        CommandSpec(
            "status",
            Role.STAFF,
            "show the bot's health and progress",
            status_command,
            args=NoArgs,
        ),
    ]
