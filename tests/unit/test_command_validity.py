"""Which prefixed messages are commands: a valid command is never a violation; any
other message starting with the prefix is judged like any message, and the bot's error reply
never repeats its text. CommandService runs here with recording fakes around it."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mautrix.types import EventID, RoomID, UserID

from bot.commands import audit as audit_commands
from bot.commands import consent as consent_commands
from bot.commands import policy as policy_commands
from bot.commands import retention as retention_commands
from bot.commands import staff as staff_commands
from bot.commands.builtin import builtin_specs
from bot.commands.registry import CommandContext, CommandRegistry, CommandSpec
from bot.config import Config, parse_config
from bot.matrix.facts import MessageFact
from bot.policy.roles import Role
from bot.service.commands import CommandService
from bot.service.observers import BatchOutcome
from tests.unit.test_config import VALID

ROOM = RoomID("!care:clinic.test")
MANAGEMENT = RoomID("!management:clinic.test")
PATIENT = UserID("@patient:clinic.test")
STAFF = UserID("@therapist:clinic.test")
ADMIN = UserID("@admin:clinic.test")
FREE_TEXT = "please call me"


class Gateway:
    async def is_encrypted(self, room_id: RoomID) -> bool:
        return True


class Access:
    ROLES = {PATIENT: Role.PATIENT, STAFF: Role.STAFF, ADMIN: Role.ADMIN}

    async def role(self, room_id: RoomID, user_id: UserID) -> Role:
        return self.ROLES.get(user_id, Role.ANYONE)


class Rooms:
    async def is_managed(self, room_id: RoomID) -> bool:
        return room_id == ROOM


@dataclass
class Services:
    registry: CommandRegistry
    prefix: str = "!chaperone"
    rooms: Rooms = field(default_factory=Rooms)
    ran: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)


def config() -> Config:
    data = copy.deepcopy(VALID)
    data["bot"]["management_room"] = MANAGEMENT
    return parse_config(data, {}, Path("/srv/chaperone"))


def recording(spec: CommandSpec[Any], services: Services) -> CommandSpec[Any]:
    """`spec` with a handler that only records the call (the real handlers need the app)."""

    async def handler(ctx: CommandContext, args: Any) -> str:
        services.ran.append((spec.name, vars(args)))  # the typed args' fields by name
        return f"ran {spec.name}"

    return CommandSpec(
        spec.name,
        spec.role,
        spec.summary,
        handler,
        spec.positional,
        spec.options,
        spec.secret_options,
        args=spec.args,
    )


def all_specs() -> list[CommandSpec[Any]]:
    return [
        *builtin_specs(),
        *consent_commands.specs(),
        *policy_commands.specs(3600),
        *retention_commands.specs(),
        *staff_commands.specs(),
        *audit_commands.specs(),
    ]


@dataclass
class Harness:
    service: CommandService
    services: Services
    replies: list[str] = field(default_factory=list)

    async def send(
        self,
        body: str,
        sender: UserID = PATIENT,
        *,
        room: RoomID = ROOM,
        msgtype: str = "m.text",
        encrypted: bool = True,
    ) -> list[Any] | None:
        fact = MessageFact(
            room_id=room,
            event_id=EventID("$event"),
            sender=sender,
            ts=0,
            msgtype=msgtype,
            body=body,
            encrypted=encrypted,
            trust="cross-signed",
        )
        if not self.service.is_command(fact):
            return None
        if len(inspect.signature(self.service.handle).parameters) > 1:  # replies via the batch
            handle: Any = self.service.handle
            result: list[Any] | None = await handle(fact, BatchOutcome())
            return result
        return await self.service.handle(fact)  # type: ignore[call-arg,unused-ignore]

    def record_reply(self, *args: Any) -> asyncio.Future[None]:
        """Stands in for CommandService.reply, the one place replies leave (its text comes
        last); awaitable or not, as the caller has it."""
        self.replies.append(args[-1])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def harness() -> Harness:
    registry = CommandRegistry()
    services = Services(registry)
    for spec in all_specs():
        # Policy set keeps its own argument parsing (the value checked against the field).
        registry.register(
            spec if isinstance(spec, policy_commands.PolicySetSpec) else recording(spec, services)
        )
    service = CommandService(config(), registry, Gateway(), Access(), services)  # type: ignore[arg-type]
    h = Harness(service, services)
    service.reply = h.record_reply  # type: ignore[method-assign,assignment]
    return h


def assert_one_line_without(reply: str, text: str) -> None:
    assert text not in reply
    assert "\n" not in reply
    assert "!chaperone help" in reply  # the pointer to help


@pytest.mark.parametrize(
    ("body", "sender"),
    [
        (f"!chaperone help {FREE_TEXT}", STAFF),  # unexpected words
        (f"!chaperone {FREE_TEXT}", STAFF),  # unknown command
        (f"!chaperone consent agree hours={FREE_TEXT}", PATIENT),  # a value that does not parse
        (f"!chaperone consent agree tz={FREE_TEXT}", PATIENT),
        (f"!chaperone consent agree max_per_day={FREE_TEXT}", PATIENT),
        (f"!chaperone consent agree topics={FREE_TEXT}!", PATIENT),
        (f"!chaperone consent agree {FREE_TEXT}=1", PATIENT),  # an unknown option
        (f'!chaperone consent agree note="{FREE_TEXT}', PATIENT),  # an unclosed quote
        (f"!chaperone consent record {FREE_TEXT}", STAFF),
        (f"!chaperone policy set consent {FREE_TEXT}", ADMIN),
        (f"!chaperone policy set {FREE_TEXT}", ADMIN),
        (f"!chaperone staff add {FREE_TEXT}", ADMIN),
        (f"!chaperone audit tail {FREE_TEXT}", STAFF),
        (f"!chaperone audit export since={FREE_TEXT}", ADMIN),
        (f"!chaperone hold {FREE_TEXT}", ADMIN),
        # A patient's free text behind an admin command is not a refused command either.
        (f"!chaperone policy set consent off {FREE_TEXT}", PATIENT),
        (f"!chaperone staff remove {FREE_TEXT}", PATIENT),
        (f"!chaperone posture fix {FREE_TEXT}", PATIENT),
        (f"!chaperone status room={FREE_TEXT}", STAFF),  # room= outside the management room
    ],
)
async def test_not_a_valid_command_returns_none_and_the_reply_never_repeats_it(
    body: str, sender: UserID
) -> None:
    h = harness()
    assert await h.send(body, sender) is None
    assert h.services.ran == []
    [reply] = h.replies
    assert_one_line_without(reply, FREE_TEXT)
    for word in ("please", "call"):
        assert word not in reply


async def test_errors_name_the_argument_and_the_expected_form() -> None:
    h = harness()
    await h.send(f"!chaperone consent agree hours={FREE_TEXT}")
    await h.send(f"!chaperone consent agree tz={FREE_TEXT}")
    await h.send(f"!chaperone help {FREE_TEXT}")
    await h.send(f"!chaperone policy set retention {FREE_TEXT}", ADMIN)
    hours, tz, extra, retention = h.replies
    assert "consent agree: hours: not valid; expected hours like Mon-Fri 09:00-17:00" in hours
    assert "tz: not valid; expected an IANA time zone like America/New_York" in tz
    assert "help: unexpected words after the command; usage: help" in extra
    assert "value: not valid for retention; expected off or a duration of at least 1h" in retention


async def test_valid_commands_return_their_rows_whether_run_or_refused() -> None:
    h = harness()
    ran = await h.send("!chaperone consent agree hours=Mon-Fri 09:00-17:00 tz=UTC")
    assert ran is not None and [e.action for e in ran] == ["command.executed"]
    assert h.services.ran[0][0] == "consent agree"
    assert str(h.services.ran[0][1]["hours"]) == "Mon-Fri 09:00-17:00"

    assert [e.action for e in await h.send("!chaperone", STAFF) or []] == ["command.executed"]
    # Refused by role, by encryption: still commands, audited as command.denied.
    denied = await h.send("!chaperone policy set consent off")
    assert denied is not None and [e.action for e in denied] == ["command.denied"]
    assert "needs the admin role" in h.replies[-1]
    unencrypted = await h.send("!chaperone help", encrypted=False)
    assert unencrypted is not None and [e.action for e in unencrypted] == ["command.denied"]
    # room= from an admin in the management room names a managed room.
    named = await h.send(f"!chaperone policy room={ROOM}", ADMIN, room=MANAGEMENT)
    assert named is not None and named[0].details["target_room"] == ROOM
    unmanaged = await h.send("!chaperone policy room=!other:clinic.test", ADMIN, room=MANAGEMENT)
    assert unmanaged is None and "does not manage that room" in h.replies[-1]
    assert "!other" not in h.replies[-1]


async def test_files_and_images_named_like_a_command_are_messages() -> None:
    h = harness()
    for msgtype in ("m.file", "m.image", "m.notice", "m.emote"):
        assert await h.send("!chaperone help", msgtype=msgtype) is None
    assert h.replies == []  # no reply either: they were never taken for commands


async def test_over_long_commands_and_arguments_are_refused_in_one_line() -> None:
    h = harness()
    long_command = "!chaperone help " + "x" * 4001
    assert await h.send(long_command, STAFF) is None
    assert "longer than 4,000 characters" in h.replies[-1]
    long_hours = "!chaperone consent agree hours=" + "Mon 09:00-17:00; " * 64  # 1,088 chars
    assert await h.send(long_hours) is None
    assert "hours: longer than 1,000 characters" in h.replies[-1]
    for reply in h.replies:
        assert_one_line_without(reply, "xxxx")
        assert "Mon 09:00" not in reply


FREE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from([s.name for s in all_specs()]),
    shape=st.sampled_from(["{t}", "x={t}", "hours={t}", "{t}=1", '"{t}', "@{t}", "room={t}"]),
    sender=st.sampled_from([PATIENT, STAFF, ADMIN]),
    free=FREE,
)
async def test_no_error_reply_ever_repeats_the_text(
    name: str, shape: str, sender: UserID, free: str
) -> None:
    """Whatever follows a command name, an error reply does not contain it. A marker around the
    text makes any echo visible (short texts may occur in the reply by chance)."""
    h = harness()
    text = "Zq" + free + "Xj"
    result = await h.send(f"!chaperone {name} " + shape.format(t=text), sender)
    if result is None:
        [reply] = h.replies
        assert "Zq" not in reply and "Xj" not in reply
        assert "\n" not in reply
