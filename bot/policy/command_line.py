"""Splitting a command message into words and key=value options, in linear time."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_COMMAND_CHARS = 4000
MAX_ARGUMENT_CHARS = 1000

_WHITESPACE = " \t\r\n"  # what shlex (POSIX mode) splits on


class CommandSyntaxError(ValueError):
    """The command text cannot be split (for example an unclosed quote).

    The message never repeats the text: it is shown in the room the text came from.
    """


@dataclass(frozen=True)
class CommandLine:
    words: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)


def strip_prefix(body: str, prefix: str) -> str | None:
    """The text after the command prefix, or None when `body` is not a command."""
    text = body.strip()
    if text == prefix:
        return ""
    if text.startswith(prefix + " ") or text.startswith(prefix + "\n"):
        return text[len(prefix) :].strip()
    return None


def split_command(text: str) -> CommandLine:
    """Split into leading words and key=value options.

    Values may be double-quoted (`hours="Mon-Fri 09:00-17:00"`); bare words after an option are
    part of its value, so the unquoted `hours=Mon-Fri 09:00-17:00` means the same. A text over
    MAX_COMMAND_CHARS is refused before it is read at all.
    """
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandSyntaxError(
            f"the command is longer than {MAX_COMMAND_CHARS:,} characters; shorten it"
        )
    words: list[str] = []
    options: dict[str, list[str]] = {}
    last_key: str | None = None
    for token in tokenize(text):
        key, eq, value = token.partition("=")
        if eq and key and key.replace("_", "").isalnum():
            key = key.lower()
            if key in options:
                raise CommandSyntaxError("an option is given twice; give each option once")
            options[key] = [value]
            last_key = key
        elif last_key is not None:
            options[last_key].append(token)
        else:
            words.append(token)
    # Joined once at the end: appending to a growing string would be quadratic.
    joined = {k: v[0] if len(v) == 1 else _join(v) for k, v in options.items()}
    return CommandLine(tuple(words), joined)


def tokenize(text: str) -> list[str]:
    """`shlex.split(text)` (POSIX mode, no comments), in one pass over the text.

    shlex grows each token one character at a time, quadratic in a token's length; this reads
    each character once. Outside quotes a backslash takes the next character as it is; inside
    double quotes it does so only before `"` or a backslash; single quotes take everything.
    """
    tokens: list[str] = []
    token: list[str] = []
    in_token = False  # a token has started (possibly empty, as `""` is)
    quote = ""  # the open quote character, if any
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                token.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and i + 1 < n and text[i + 1] in '"\\':
                i += 1
                token.append(text[i])
            elif c == "\\" and i + 1 >= n:
                raise CommandSyntaxError("cannot read the command: a quote is not closed")
            else:
                token.append(c)
        elif c in _WHITESPACE:
            if in_token:
                tokens.append("".join(token))
                token, in_token = [], False
        elif c in "'\"":
            quote, in_token = c, True
        elif c == "\\":
            if i + 1 >= n:
                raise CommandSyntaxError("cannot read the command: it ends with a backslash")
            i += 1
            token.append(text[i])
            in_token = True
        else:
            token.append(c)
            in_token = True
        i += 1
    if quote:
        raise CommandSyntaxError("cannot read the command: a quote is not closed")
    if in_token:
        tokens.append("".join(token))
    return tokens


def _join(parts: list[str]) -> str:
    """An option value continued by bare words: the words joined by a space, as the former
    `(value + " " + word).strip()` per word gave it, but built once instead of once per word."""
    pieces: list[str] = []
    for i, part in enumerate(parts):
        if not part.strip():
            if pieces:
                pieces[-1] = pieces[-1].rstrip()
            continue
        if not pieces:
            part = part.lstrip()
        if i > 0:
            part = part.rstrip()
        pieces.append(part)
    return " ".join(pieces).rstrip()
