"""A room's policy (SPEC 2) as a plain value, and parsing of `policy set <field> <value>`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bot.policy.durations import (
    DurationTooLong,
    format_duration,
    format_retention,
    parse_retention,
)

FIELDS = ("consent", "enforcement", "retention", "legal_hold", "require_encryption")
_ON_OFF = {"on": True, "off": False}


@dataclass(frozen=True)
class RoomPolicy:
    consent: str = "required"  # required | off
    enforcement: str = "redact"  # redact | warn | audit
    retention_seconds: int | None = None  # None: retention off
    legal_hold: bool = False
    require_encryption: bool = True

    def value_text(self, field: str) -> str:
        """The field as users write it (`30d`, `on`, `redact`)."""
        value = self.get(field)
        if field == "retention":
            return format_retention(value)
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)

    def get(self, field: str) -> Any:
        return getattr(self, "retention_seconds" if field == "retention" else field)

    def with_value(self, field: str, value: Any) -> RoomPolicy:
        return replace(self, **{"retention_seconds" if field == "retention" else field: value})

    def describe(self) -> list[str]:
        return [f"{field}: {self.value_text(field)}" for field in FIELDS]


def parse_policy_value(field: str, text: str, *, retention_minimum: int) -> Any:
    """The typed value for `policy set <field> <text>`, or ValueError saying what is expected."""
    text = text.strip()
    if field == "consent":
        return _choice(field, text, ("required", "off"))
    if field == "enforcement":
        return _choice(field, text, ("redact", "warn", "audit"))
    if field in ("legal_hold", "require_encryption"):
        if text.lower() not in _ON_OFF:
            raise ValueError(f"{field}: '{text}' is not allowed; expected on or off")
        return _ON_OFF[text.lower()]
    if field == "retention":
        try:
            seconds = parse_retention(text)
        except DurationTooLong as e:
            raise ValueError(f"retention: {e}; expected a shorter duration, or off") from None
        except ValueError as e:
            raise ValueError(f"retention: {e}, or off") from None
        if seconds is not None and seconds < retention_minimum:
            minimum = format_duration(retention_minimum)
            raise ValueError(
                f"retention: {text} is shorter than the configured minimum ({minimum}); "
                f"expected {minimum} or longer, or off"
            )
        return seconds
    raise ValueError(f"'{field}' is not a policy field; expected one of {', '.join(FIELDS)}")


def _choice(field: str, text: str, choices: tuple[str, ...]) -> str:
    if text.lower() not in choices:
        raise ValueError(f"{field}: '{text}' is not allowed; expected one of {', '.join(choices)}")
    return text.lower()
