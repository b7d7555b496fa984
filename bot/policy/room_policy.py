"""A room's policy as a plain value, and parsing of `policy set <field> <value>`.

Each policy field is declared once, as a `RoomPolicy` attribute made by `policy_field`: its
default, its kind (how a value is written, shown and read from the config) and, when it
differs from the attribute, its name as users and the config's `defaults` section write it.
The `defaults.*` config keys, the `room_policy` columns (named like the attributes), the
`policy` listing and `policy set` all follow from these declarations. A new field still needs
its column in a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any, Protocol

from bot.policy.durations import (
    DurationTooLong,
    format_duration,
    format_retention,
    parse_retention,
)

if TYPE_CHECKING:
    from bot.config_reader import Reader


class Kind(Protocol):
    def parse(self, name: str, text: str, retention_minimum: int) -> Any:
        """The value for `policy set <name> <text>`, or ValueError saying what is expected."""

    def show(self, value: Any) -> str:
        """The value as users write it."""

    def read(self, r: Reader, key: str, default: Any) -> Any:
        """The value of config key `key`; a bad one is reported to `r`."""


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def parse(self, name: str, text: str, retention_minimum: int) -> str:
        if text.lower() not in self.options:
            expected = ", ".join(self.options)
            raise ValueError(f"{name}: '{text}' is not allowed; expected one of {expected}")
        return text.lower()

    def show(self, value: Any) -> str:
        return str(value)

    def read(self, r: Reader, key: str, default: Any) -> str:
        return r.choice(key, default, self.options)


class OnOff:
    def parse(self, name: str, text: str, retention_minimum: int) -> bool:
        if text.lower() not in ("on", "off"):
            raise ValueError(f"{name}: '{text}' is not allowed; expected on or off")
        return text.lower() == "on"

    def show(self, value: Any) -> str:
        return "on" if value else "off"

    def read(self, r: Reader, key: str, default: Any) -> bool:
        return r.flag(key, default)


class Retention:
    """Seconds, or None for off; `policy set` refuses less than the configured minimum."""

    def parse(self, name: str, text: str, retention_minimum: int) -> int | None:
        try:
            seconds = parse_retention(text)
        except DurationTooLong as e:
            raise ValueError(f"{name}: {e}; expected a shorter duration, or off") from None
        except ValueError as e:
            raise ValueError(f"{name}: {e}, or off") from None
        if seconds is not None and seconds < retention_minimum:
            minimum = format_duration(retention_minimum)
            raise ValueError(
                f"{name}: {text} is shorter than the configured minimum ({minimum}); "
                f"expected {minimum} or longer, or off"
            )
        return seconds

    def show(self, value: Any) -> str:
        return format_retention(value)

    def read(self, r: Reader, key: str, default: Any) -> int | None:
        # The configured minimum applies to defaults.retention too; bot.config checks it.
        return default if r.raw(key) is None else r.retention(key)


def policy_field(default: Any, kind: Kind, *, name: str = "", set_column: str = "") -> Any:
    """A RoomPolicy attribute. `set_column`: for a field whose None is a value (retention
    off), the column telling "overridden to None" apart from "not overridden"."""
    return dataclass_field(
        default=default, metadata={"kind": kind, "name": name, "set_column": set_column}
    )


@dataclass(frozen=True)
class RoomPolicy:
    consent: str = policy_field("required", Choice(("required", "off")))
    enforcement: str = policy_field("redact", Choice(("redact", "warn", "audit")))
    retention_seconds: int | None = policy_field(  # None: retention off
        None, Retention(), name="retention", set_column="retention_set"
    )
    legal_hold: bool = policy_field(False, OnOff())
    require_encryption: bool = policy_field(True, OnOff())

    def value_text(self, field: str) -> str:
        """The field as users write it (`30d`, `on`, `redact`)."""
        return POLICY_FIELDS[field].kind.show(self.get(field))

    def get(self, field: str) -> Any:
        return getattr(self, POLICY_FIELDS[field].attribute)

    def with_value(self, field: str, value: Any) -> RoomPolicy:
        return replace(self, **{POLICY_FIELDS[field].attribute: value})

    def describe(self) -> list[str]:
        return [f"{field}: {self.value_text(field)}" for field in FIELDS]


@dataclass(frozen=True)
class PolicyField:
    name: str  # as `policy set` and the config's `defaults` section write it
    attribute: str  # on RoomPolicy, and the room_policy column
    kind: Kind
    default: Any
    set_column: str  # see policy_field; "" for most fields


POLICY_FIELDS = {
    spec.name: spec
    for spec in (
        PolicyField(
            f.metadata["name"] or f.name,
            f.name,
            f.metadata["kind"],
            f.default,
            f.metadata["set_column"],
        )
        for f in fields(RoomPolicy)
    )
}
FIELDS = tuple(POLICY_FIELDS)


def parse_policy_value(field: str, text: str, *, retention_minimum: int) -> Any:
    """The typed value for `policy set <field> <text>`, or ValueError saying what is expected."""
    spec = POLICY_FIELDS.get(field)
    if spec is None:
        raise ValueError(f"'{field}' is not a policy field; expected one of {', '.join(FIELDS)}")
    return spec.kind.parse(field, text.strip(), retention_minimum)
