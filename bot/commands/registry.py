"""Command specs with typed arguments and roles, and the registry that matches and parses them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mautrix.types import EventID, RoomID, UserID

from bot.policy.command_line import MAX_ARGUMENT_CHARS, CommandLine
from bot.policy.roles import Role

if TYPE_CHECKING:
    from bot.commands.services import Services

USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d+)?$")
# Room version 12 room IDs have no server part (`!<hash>`); older ones are `!opaque:server`.
ROOM_ID_RE = re.compile(r"^![^:\s]+(:[A-Za-z0-9.\-]+(:\d+)?)?$")


USER_ID_EXPECTED = "expected a user ID like @name:server"
ROOM_ID_EXPECTED = "expected a room ID like !id:server"


class CommandUsageError(ValueError):
    """Bad arguments; the message is the one-line error shown to the user.

    It names the argument and the expected form and never repeats what the user typed: the
    reply goes to the room the text came from, and that text may be anything.
    """


def user_id_arg(value: str) -> UserID:
    if not USER_ID_RE.match(value):
        raise ValueError(f"not a user ID; {USER_ID_EXPECTED}")
    return UserID(value)


def room_id_arg(value: str) -> RoomID:
    if not ROOM_ID_RE.match(value):
        raise ValueError(f"not a room ID; {ROOM_ID_EXPECTED}")
    return RoomID(value)


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
    attr: str = ""
    """The field of the command's args dataclass that gets the value; `name` when empty
    (a name like `on|off` is what the user sees, not a Python name)."""

    @property
    def field_name(self) -> str:
        return self.attr or self.name

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
    """What a handler knows about the call; `services` are the parts commands may use, built by
    the composition root (bot.app).

    `room_id` is the room the command is about: where it was sent, or the `room=!id` an admin
    named in the management room (`reply_room_id` is where it was sent).
    """

    room_id: RoomID
    reply_room_id: RoomID
    sender: UserID
    event_id: EventID
    role: Role
    trust: str
    in_management_room: bool
    services: Services


@dataclass(frozen=True)
class Reply:
    """A reply Element renders: `text` is the plain `body` (it must read well on its own),
    `html` the `formatted_body`, in which every piece of user-supplied text is escaped."""

    text: str
    html: str | None = None


@dataclass(frozen=True)
class NoArgs:
    """The args of a command that takes none."""


A = TypeVar("A")
Handler = Callable[[CommandContext, A], Awaitable[str | Reply]]


@dataclass(frozen=True)
class CommandSpec(Generic[A]):
    """A command: its name, the least role that may run it, its arguments and its handler.

    `args` is a frozen dataclass with one field per argument (`Arg.field_name`); the registry
    fills it from the parsed words, so the handler reads `args.user`, typed. A spec whose
    arguments and dataclass fields disagree fails when it is made, not when it is run.
    """

    name: str
    role: Role
    summary: str
    handler: Handler[A]
    positional: tuple[Arg, ...] = ()
    options: tuple[Arg, ...] = ()
    secret_options: frozenset[str] = field(default_factory=frozenset)
    rest: Arg | None = None
    """Words after the positional ones, each parsed by this argument (a list, maybe empty)."""
    max_rest: int = 10
    args: type[A] = field(kw_only=True)

    def __post_init__(self) -> None:
        check_args_type(self)

    def typed_args(self, values: Mapping[str, Any]) -> A:
        """The parsed `values` (from `parse_args`) as the handler's args dataclass."""
        names = {a.name: a.field_name for a in self.arguments}
        return self.args(**{names[name]: value for name, value in values.items()})

    async def run(self, ctx: CommandContext, values: Mapping[str, Any]) -> str | Reply:
        return await self.handler(ctx, self.typed_args(values))

    @property
    def arguments(self) -> tuple[Arg, ...]:
        return (*self.positional, *((self.rest,) if self.rest else ()), *self.options)

    @property
    def usage(self) -> str:
        parts = [self.name]
        parts += [a.usage(option=False) for a in self.positional]
        if self.rest is not None:
            parts.append(f"[<{self.rest.name}>..]")
        parts += [a.usage(option=True) for a in self.options]
        return " ".join(parts)

    def parse_args(self, words: tuple[str, ...], options: Mapping[str, str]) -> dict[str, Any]:
        """The parsed values by argument name (`typed_args` makes the handler's dataclass of
        them), or CommandUsageError naming the argument and the expected form (never the text
        given)."""
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


def check_args_type(spec: CommandSpec[Any]) -> None:
    """TypeError unless `spec.args` is a dataclass with exactly one field per argument, and a
    default for each argument that may be left out."""
    if not is_dataclass(spec.args):
        raise TypeError(f"command '{spec.name}': args must be a dataclass")
    declared = {f.name: f for f in fields(spec.args)}
    wanted = {a.field_name: a for a in spec.arguments}
    if set(declared) != set(wanted):
        raise TypeError(
            f"command '{spec.name}': {spec.args.__name__} has fields {sorted(declared)}, "
            f"its arguments are {sorted(wanted)}"
        )
    for name, arg in wanted.items():
        f = declared[name]
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if not arg.required and arg is not spec.rest and not has_default:
            raise TypeError(f"command '{spec.name}': optional {name} needs a default")


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

    def __init__(self, specs: Iterable[CommandSpec[Any]] = ()) -> None:
        self._specs: dict[str, CommandSpec[Any]] = {}
        self._longest = 1  # words in the longest command name
        for spec in specs:
            self.register(spec)

    def register(self, spec: CommandSpec[Any]) -> None:
        if spec.name in self._specs:
            raise ValueError(f"command '{spec.name}' registered twice")
        self._specs[spec.name] = spec
        self._longest = max(self._longest, len(spec.name.split()))

    def match(self, line: CommandLine) -> tuple[CommandSpec[Any], tuple[str, ...]] | None:
        """The spec with the longest name matching the leading words, and the words left."""
        # Only as many leading words as the longest name has: the rest are arguments, and
        # joining all of them for every length would be quadratic in the message.
        words = tuple(w.lower() for w in line.words[: self._longest])
        for n in range(len(words), 0, -1):
            spec = self._specs.get(" ".join(words[:n]))
            if spec is not None:
                return spec, line.words[n:]
        return None

    def visible_to(self, role: Role) -> list[CommandSpec[Any]]:
        return [s for s in self._specs.values() if s.role <= role]

    def __iter__(self) -> Iterator[CommandSpec[Any]]:
        return iter(self._specs.values())
