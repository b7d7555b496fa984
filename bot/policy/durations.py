"""Durations as clinics write them (`45s`, `90m`, `12h`, `30d`, `6w`, `1y`), in whole seconds."""

from __future__ import annotations

import re

# Largest first, so format_duration picks the largest unit that divides exactly.
UNITS: dict[str, int] = {
    "y": 365 * 86400,
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
}

_EXPECTED = "expected a number followed by s, m, h, d, w or y, like 90m or 30d"
# ASCII digits only (\d would also take other scripts' digits) and lower-case units only, so
# `1M` is refused rather than silently read as a minute when a month was meant.
_DURATION = re.compile(r"([0-9]+)([smhdwy])")


def parse_duration(text: str) -> int:
    """Seconds in `text`, a positive whole number followed by one unit; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration: {_EXPECTED}")
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: {_EXPECTED}")
    amount = int(match.group(1))
    if amount <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero; {_EXPECTED}")
    return amount * UNITS[match.group(2)]


def format_duration(seconds: int) -> str:
    """`seconds` in the largest unit that holds it exactly, so parse_duration reads it back."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(
            f"{seconds!r} is not a duration: expected a positive whole number of seconds"
        )
    for unit, size in UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every integer is a whole number of seconds")


def parse_retention(text: str) -> int | None:
    """A retention setting: a duration in seconds, or None for `off`."""
    if isinstance(text, str) and text.strip().lower() == "off":
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a retention: expected off or a number followed by s, m, h, d, w "
            "or y, like 90m or 30d"
        ) from None


def format_retention(seconds: int | None) -> str:
    """The inverse of parse_retention: `off` for None, else the duration."""
    return "off" if seconds is None else format_duration(seconds)
