"""Handlers get typed args: the registry fills each command's args dataclass from the parsed
words, and a spec whose arguments and dataclass disagree is refused when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from mautrix.types import UserID

from bot.commands import audit as audit_commands
from bot.commands import consent as consent_commands
from bot.commands import policy as policy_commands
from bot.commands import posture as posture_commands
from bot.commands import retention as retention_commands
from bot.commands import room as room_commands
from bot.commands import staff as staff_commands
from bot.commands import verify as verify_commands
from bot.commands.builtin import builtin_specs
from bot.commands.registry import (
    Arg,
    CommandContext,
    CommandRegistry,
    CommandSpec,
    NoArgs,
    positive_int_arg,
)
from bot.policy.command_line import split_command
from bot.policy.roles import Role
from bot.service.audit_tools import TAIL_DEFAULT


def registry() -> CommandRegistry:
    """Every command, as the app registers them."""
    return CommandRegistry(
        [
            *builtin_specs(),
            *posture_commands.specs(),
            *staff_commands.specs(),
            *audit_commands.specs(),
            *retention_commands.specs(),
            *verify_commands.specs(),
            *consent_commands.specs(),
            *policy_commands.specs(3600),
            *room_commands.specs(),
        ]
    )


def typed(text: str) -> Any:
    line = split_command(text)
    match = registry().match(line)
    assert match is not None
    spec, words = match
    return spec.typed_args(spec.parse_args(words, dict(line.options)))


def test_handlers_read_named_typed_fields() -> None:
    assert typed("hold on") == retention_commands.HoldArgs(state="on")
    assert typed("audit tail") == audit_commands.TailArgs(count=TAIL_DEFAULT)
    assert typed("audit tail 7") == audit_commands.TailArgs(count=7)
    assert typed("audit export since=2026-11-01 format=csv") == audit_commands.ExportArgs(
        since="2026-11-01", format="csv"
    )
    assert typed("policy set consent off") == policy_commands.PolicySetArgs(
        field="consent", value="off"
    )
    assert typed("room new @p:x @s:x @t:x name=Care") == room_commands.RoomNewArgs(
        patient=UserID("@p:x"), staff=[UserID("@s:x"), UserID("@t:x")], name="Care"
    )
    assert typed("verify @u:x") == verify_commands.VerifyArgs(user=UserID("@u:x"))
    agreed = typed("consent agree max_per_day=5 topics=billing")
    assert isinstance(agreed, consent_commands.ChoicesArgs)
    assert (agreed.max_per_day, agreed.topics, agreed.hours) == (5, ("billing",), None)
    recorded = typed('consent record @p:x note="paper form"')
    assert isinstance(recorded, consent_commands.RecordArgs)
    assert (recorded.user, recorded.note, recorded.tz) == ("@p:x", "paper form", None)
    assert typed("status") == NoArgs()


async def _handler(ctx: CommandContext, args: Any) -> str:
    return ""


@dataclass(frozen=True, kw_only=True)
class CountArgs:
    count: int = 1


def test_a_spec_whose_args_disagree_is_refused_when_made() -> None:
    count = Arg("count", positive_int_arg, required=False)
    CommandSpec("ok", Role.STAFF, "", _handler, (count,), args=CountArgs)
    with pytest.raises(TypeError, match="fields"):
        CommandSpec("typo", Role.STAFF, "", _handler, (Arg("cuont", int),), args=CountArgs)
    with pytest.raises(TypeError, match="fields"):
        CommandSpec("none", Role.STAFF, "", _handler, (count,), args=NoArgs)

    @dataclass(frozen=True, kw_only=True)
    class NoDefault:
        count: int

    with pytest.raises(TypeError, match="needs a default"):
        CommandSpec("optional", Role.STAFF, "", _handler, (count,), args=NoDefault)
