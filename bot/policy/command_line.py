"""Splitting a command message into words and key=value options."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


class CommandSyntaxError(ValueError):
    """The command text cannot be split (for example an unclosed quote)."""


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
    part of its value, so the unquoted `hours=Mon-Fri 09:00-17:00` means the same.
    """
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError as e:
        raise CommandSyntaxError(f"cannot read the command: {e}; check the quotes") from e
    words: list[str] = []
    options: dict[str, str] = {}
    last_key: str | None = None
    for token in tokens:
        key, eq, value = token.partition("=")
        if eq and key and key.replace("_", "").isalnum():
            key = key.lower()
            if key in options:
                raise CommandSyntaxError(f"option '{key}' is given twice; give it once")
            options[key] = value
            last_key = key
        elif last_key is not None:
            options[last_key] = f"{options[last_key]} {token}".strip()
        else:
            words.append(token)
    return CommandLine(tuple(words), options)
