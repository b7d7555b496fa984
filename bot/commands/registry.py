"""Command specs with typed arguments and roles, and the registry that matches and parses them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.policy.command_line import CommandLine
from bot.policy.roles import Role

USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?$")
# Room version 12 room IDs have no server part (`!<hash>`); older ones are `!opaque:server`.
ROOM_ID_RE = re.compile(r"^![^:\s]+(:[A-Za-z0-9.\-]+(:\d+)?)?$")


class CommandUsageError(ValueError):
    """Bad arguments; the message is the one-line error shown to the user."""


def user_id_arg(value: str) -> str:
    if not USER_ID_RE.match(value):
        raise ValueError(f"'{value}' is not a user ID; expected the form @name:server")
    return value


def room_id_arg(value: str) -> str:
    if not ROOM_ID_RE.match(value):
        raise ValueError(f"'{value}' is not a room ID; expected the form !id:server")
    return value


def positive_int_arg(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"'{value}' is not a positive whole number; expected e.g. 20")
    return int(value)


def choice_arg(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"'{value}' is not allowed; expected one of {', '.join(choices)}")
        return value.lower()

    return parse


@dataclass(frozen=True)
class Arg:
    name: str
    parse: Callable[[str], Any]
    required: bool = True
    help: str = ""

    def usage(self, *, option: bool) -> str:
        text = f"{self.name}=.." if option else f"<{self.name}>"
        return text if self.required else f"[{text}]"


@dataclass(frozen=True)
class CommandContext:
    """What a handler knows about the call; `services` is the app's facade (bot.app.Chaperone).

    `room_id` is the room the command is about: where it was sent, or the `room=!id` an admin
    named in the management room (`reply_room_id` is where it was sent).
    """

    room_id: str
    reply_room_id: str
    sender: str
    event_id: str
    role: Role
    trust: str
    in_management_room: bool
    services: Any


Handler = Callable[[CommandContext, Mapping[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    role: Role
    summary: str
    handler: Handler
    positional: tuple[Arg, ...] = ()
    options: tuple[Arg, ...] = ()
    secret_options: frozenset[str] = field(default_factory=frozenset)

    @property
    def usage(self) -> str:
        parts = [self.name]
        parts += [a.usage(option=False) for a in self.positional]
        parts += [a.usage(option=True) for a in self.options]
        return " ".join(parts)

    def parse_args(self, words: tuple[str, ...], options: Mapping[str, str]) -> dict[str, Any]:
        """Typed arguments, or CommandUsageError naming the argument and the expected form."""
        values: dict[str, Any] = {}
        if len(words) > len(self.positional):
            extra = " ".join(words[len(self.positional) :])
            raise CommandUsageError(f"unexpected '{extra}'; usage: {self.usage}")
        for arg, word in zip(self.positional, words, strict=False):
            values[arg.name] = _parse_one(arg, word, self.usage)
        for arg in self.positional[len(words) :]:
            if arg.required:
                raise CommandUsageError(f"missing <{arg.name}>; usage: {self.usage}")
        known = {a.name: a for a in self.options}
        for key, raw in options.items():
            if key not in known:
                expected = ", ".join(known) or "no options"
                raise CommandUsageError(f"unknown option '{key}'; expected {expected}")
            values[key] = _parse_one(known[key], raw, self.usage)
        for arg in self.options:
            if arg.required and arg.name not in values:
                raise CommandUsageError(f"missing {arg.name}=..; usage: {self.usage}")
        return values


def _parse_one(arg: Arg, raw: str, usage: str) -> Any:
    try:
        return arg.parse(raw)
    except ValueError as e:
        raise CommandUsageError(f"{arg.name}: {e}") from e


class CommandRegistry:
    """The command set; specs are registered explicitly by the composition root."""

    def __init__(self, specs: Iterable[CommandSpec] = ()) -> None:
        self._specs: dict[str, CommandSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: CommandSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"command '{spec.name}' registered twice")
        self._specs[spec.name] = spec

    def match(self, line: CommandLine) -> tuple[CommandSpec, tuple[str, ...]] | None:
        """The spec with the longest name matching the leading words, and the words left."""
        words = tuple(w.lower() for w in line.words)
        for n in range(len(words), 0, -1):
            spec = self._specs.get(" ".join(words[:n]))
            if spec is not None:
                return spec, line.words[n:]
        return None

    def visible_to(self, role: Role) -> list[CommandSpec]:
        return [s for s in self._specs.values() if s.role <= role]

    def __iter__(self) -> Any:
        return iter(self._specs.values())
