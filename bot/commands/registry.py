"""Command specs with typed arguments and roles, and the registry that matches and parses them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.policy.command_line import MAX_ARGUMENT_CHARS, CommandLine
from bot.policy.roles import Role

USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?$")
# Room version 12 room IDs have no server part (`!<hash>`); older ones are `!opaque:server`.
ROOM_ID_RE = re.compile(r"^![^:\s]+(:[A-Za-z0-9.\-]+(:\d+)?)?$")


USER_ID_EXPECTED = "expected a user ID like @name:server"
ROOM_ID_EXPECTED = "expected a room ID like !id:server"


class CommandUsageError(ValueError):
    """Bad arguments; the message is the one-line error shown to the user.

    It names the argument and the expected form and never repeats what the user typed: the
    reply goes to the room the text came from, and that text may be anything (SPEC 3.3).
    """


def user_id_arg(value: str) -> str:
    if not USER_ID_RE.match(value):
        raise ValueError(f"not a user ID; {USER_ID_EXPECTED}")
    return value


def room_id_arg(value: str) -> str:
    if not ROOM_ID_RE.match(value):
        raise ValueError(f"not a room ID; {ROOM_ID_EXPECTED}")
    return value


def positive_int_arg(value: str) -> int:
    # isascii: str.isdigit also accepts other scripts' digits and superscripts.
    if not value.isascii() or not value.isdigit() or len(value) > 9 or int(value) < 1:
        raise ValueError("not a positive whole number; expected e.g. 20")
    return int(value)


def choice_arg(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"not allowed; expected one of {', '.join(choices)}")
        return value.lower()

    return parse


@dataclass(frozen=True)
class Arg:
    """One argument. `parse` turns the text into the value or raises ValueError; the user is
    then told `expected` (the form, as "expected ..."), never the parser's message, which may
    quote the text."""

    name: str
    parse: Callable[[str], Any]
    required: bool = True
    help: str = ""
    expected: str = ""

    def usage(self, *, option: bool) -> str:
        text = f"{self.name}=.." if option else f"<{self.name}>"
        return text if self.required else f"[{text}]"

    @property
    def expected_form(self) -> str:
        if self.expected:
            return self.expected
        return f"expected {self.help}" if self.help else "see the usage in help"


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


@dataclass(frozen=True)
class Reply:
    """A reply Element renders: `text` is the plain `body` (it must read well on its own),
    `html` the `formatted_body`, in which every piece of user-supplied text is escaped."""

    text: str
    html: str | None = None


Handler = Callable[[CommandContext, Mapping[str, Any]], Awaitable[str | Reply]]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    role: Role
    summary: str
    handler: Handler
    positional: tuple[Arg, ...] = ()
    options: tuple[Arg, ...] = ()
    secret_options: frozenset[str] = field(default_factory=frozenset)
    rest: Arg | None = None
    """Words after the positional ones, each parsed by this argument (a list, maybe empty)."""
    max_rest: int = 10

    @property
    def usage(self) -> str:
        parts = [self.name]
        parts += [a.usage(option=False) for a in self.positional]
        if self.rest is not None:
            parts.append(f"[<{self.rest.name}>..]")
        parts += [a.usage(option=True) for a in self.options]
        return " ".join(parts)

    def parse_args(self, words: tuple[str, ...], options: Mapping[str, str]) -> dict[str, Any]:
        """Typed arguments, or CommandUsageError naming the argument and the expected form
        (never the text given)."""
        values: dict[str, Any] = {}
        extra = words[len(self.positional) :]
        if extra and self.rest is None:
            raise CommandUsageError(f"unexpected words after the command; usage: {self.usage}")
        if self.rest is not None:
            if len(extra) > self.max_rest:
                raise CommandUsageError(
                    f"at most {self.max_rest} <{self.rest.name}>; usage: {self.usage}"
                )
            values[self.rest.name] = [parse_value(self.rest, word) for word in extra]
        for arg, word in zip(self.positional, words, strict=False):
            values[arg.name] = parse_value(arg, word)
        for arg in self.positional[len(words) :]:
            if arg.required:
                raise CommandUsageError(f"missing <{arg.name}>; usage: {self.usage}")
        known = {a.name: a for a in self.options}
        for key, raw in options.items():
            if key not in known:
                expected = ", ".join(known) or "no options"
                raise CommandUsageError(f"an option is not known here; expected {expected}")
            values[key] = parse_value(known[key], raw)
        for arg in self.options:
            if arg.required and arg.name not in values:
                raise CommandUsageError(f"missing {arg.name}=..; usage: {self.usage}")
        return values


def parse_value(arg: Arg, raw: str) -> Any:
    """`raw` parsed by `arg`; an over-long value is refused before its parser sees it."""
    if len(raw) > MAX_ARGUMENT_CHARS:
        raise CommandUsageError(
            f"{arg.name}: longer than {MAX_ARGUMENT_CHARS:,} characters; {arg.expected_form}"
        )
    try:
        return arg.parse(raw)
    except ValueError:
        raise CommandUsageError(f"{arg.name}: not valid; {arg.expected_form}") from None


class CommandRegistry:
    """The command set; specs are registered explicitly by the composition root."""

    def __init__(self, specs: Iterable[CommandSpec] = ()) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self._longest = 1  # words in the longest command name
        for spec in specs:
            self.register(spec)

    def register(self, spec: CommandSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"command '{spec.name}' registered twice")
        self._specs[spec.name] = spec
        self._longest = max(self._longest, len(spec.name.split()))

    def match(self, line: CommandLine) -> tuple[CommandSpec, tuple[str, ...]] | None:
        """The spec with the longest name matching the leading words, and the words left."""
        # Only as many leading words as the longest name has: the rest are arguments, and
        # joining all of them for every length would be quadratic in the message.
        words = tuple(w.lower() for w in line.words[: self._longest])
        for n in range(len(words), 0, -1):
            spec = self._specs.get(" ".join(words[:n]))
            if spec is not None:
                return spec, line.words[n:]
        return None

    def visible_to(self, role: Role) -> list[CommandSpec]:
        return [s for s in self._specs.values() if s.role <= role]

    def __iter__(self) -> Any:
        return iter(self._specs.values())
