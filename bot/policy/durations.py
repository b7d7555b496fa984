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

# Matrix's canonical JSON stops at 2^53-1 (m.room.retention's max_lifetime is in ms), so no
# duration may exceed that many milliseconds: about 285,616 years.
MAX_MILLISECONDS = 2**53 - 1
MAX_SECONDS = MAX_MILLISECONDS // 1000
_MAX_DIGITS = len(str(MAX_SECONDS))  # longer numbers are refused before int() reads them


class DurationTooLong(ValueError):
    """A well-formed duration longer than Matrix can represent in milliseconds."""


def _too_long(text: str) -> DurationTooLong:
    years = MAX_SECONDS // UNITS["y"]
    text = text.strip() if len(text.strip()) <= 40 else text.strip()[:20] + "…"
    return DurationTooLong(
        f"{text!r} is too long: Matrix cannot represent more than {years}y (2^53-1 milliseconds)"
    )


# ASCII digits only (\d would also take other scripts' digits) and lower-case units only, so
# `1M` is refused rather than silently read as a minute when a month was meant.
_DURATION = re.compile(r"([0-9]+)([smhdwy])")


def parse_duration(text: str) -> int:
    """Seconds in `text`, a positive whole number followed by one unit, at most MAX_SECONDS;
    ValueError otherwise (DurationTooLong when it is only too long)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration: {_EXPECTED}")
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: {_EXPECTED}")
    digits = match.group(1).lstrip("0")
    if len(digits) > _MAX_DIGITS:
        raise _too_long(text)
    amount = int(digits or "0")
    if amount <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero; {_EXPECTED}")
    seconds = amount * UNITS[match.group(2)]
    if seconds > MAX_SECONDS:
        raise _too_long(text)
    return seconds


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
    except DurationTooLong:
        raise
    except ValueError:
        raise ValueError(
            f"{text!r} is not a retention: expected off or a number followed by s, m, h, d, w "
            "or y, like 90m or 30d"
        ) from None


def format_retention(seconds: int | None) -> str:
    """The inverse of parse_retention: `off` for None, else the duration."""
    return "off" if seconds is None else format_duration(seconds)
