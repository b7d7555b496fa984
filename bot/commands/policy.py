"""`policy` (staff) shows a room's policy; `policy set <field> <value>` (admin) changes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.commands import formatting as fmt
from bot.commands.registry import (
    Arg,
    CommandContext,
    CommandSpec,
    CommandUsageError,
    NoArgs,
    Reply,
)
from bot.policy.durations import MAX_SECONDS, UNITS, format_duration
from bot.policy.roles import Role
from bot.policy.room_policy import FIELDS, parse_policy_value

FIELD_EXPECTED = f"expected one of {', '.join(FIELDS)}"


def field_arg(value: str) -> str:
    if value.lower() not in FIELDS:
        raise ValueError(f"not a policy field; {FIELD_EXPECTED}")
    return value.lower()


def value_expected(field: str, retention_minimum: int) -> str:
    """What `policy set <field>` takes, for the error that must not repeat the value given."""
    if field == "retention":
        longest = f"{MAX_SECONDS // UNITS['y']}y"  # Matrix's JSON stops at 2^53-1 ms
        return (
            f"expected off or a duration of at least {format_duration(retention_minimum)} "
            f"(the configured minimum) and at most {longest}"
        )
    forms = {"consent": "required or off", "enforcement": "one of redact, warn, audit"}
    return f"expected {forms.get(field, 'on or off')}"


@dataclass(frozen=True, kw_only=True)
class PolicySetArgs:
    field: str
    value: str
    """The value's text, checked against the field while parsing."""


@dataclass(frozen=True)
class PolicySetSpec(CommandSpec[PolicySetArgs]):
    """Checks the value against its field while parsing, so a bad value is refused before
    anything runs (and nothing is recorded)."""

    retention_minimum: int = 3600

    def parse_args(self, words: tuple[str, ...], options: Mapping[str, str]) -> dict[str, Any]:
        # A value may be several words (`policy set retention 30d` is one; be lenient anyway).
        if len(words) > 2:
            words = (words[0], " ".join(words[1:]))
        values = super().parse_args(words, options)
        field = values["field"]
        try:
            parse_policy_value(field, values["value"], retention_minimum=self.retention_minimum)
        except ValueError:
            expected = value_expected(field, self.retention_minimum)
            raise CommandUsageError(f"value: not valid for {field}; {expected}") from None
        return values


async def policy_show(ctx: CommandContext, args: NoArgs) -> Reply:
    policy = await ctx.services.policy.get(ctx.room_id)
    where = "this room" if ctx.room_id == ctx.reply_room_id else ctx.room_id
    return fmt.listing([f"Policy of {where}:", *policy.describe()])


async def policy_set(ctx: CommandContext, args: PolicySetArgs) -> str:
    policy, field = ctx.services.policy, args.field
    old = await policy.get(ctx.room_id)
    try:
        new = await policy.set(ctx.room_id, field, args.value, ctx.sender, ctx.event_id)
    except ValueError:  # validated while parsing; kept for a minimum changed meanwhile
        raise CommandUsageError(f"value: not valid for {field}") from None
    return f"Policy changed: {field} {old.value_text(field)} → {new.value_text(field)}."


def specs(retention_minimum: int) -> list[CommandSpec[Any]]:
    return [
        CommandSpec("policy", Role.STAFF, "show this room's policy", policy_show, args=NoArgs),
        PolicySetSpec(
            "policy set",
            Role.ADMIN,
            f"change this room's policy ({', '.join(FIELDS)})",
            policy_set,
            positional=(
                Arg("field", field_arg, help=", ".join(FIELDS), expected=FIELD_EXPECTED),
                Arg("value", str, help="e.g. required, warn, 30d, on"),
            ),
            retention_minimum=retention_minimum,
            args=PolicySetArgs,
        ),
    ]
