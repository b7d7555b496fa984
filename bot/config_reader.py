"""Reading and validating the parsed YAML for bot.config; internal to that module.

`Reader` knows nothing of Chaperone's sections: bot.config passes in the schema and the
variables that override secret keys, and builds the typed Config from what it reads.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.policy.durations import parse_duration, parse_retention
from bot.policy.hours import parse_hours


def yaml_problem(file: Path, exc: yaml.YAMLError) -> str:
    # str(exc) quotes the offending line, which may hold a secret: report its position only.
    where, what = "", "syntax error"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        if "constructor for the tag" in str(exc.problem):
            what = "an unquoted value starting with ! is read as a YAML tag"
            return f'{file}: not valid YAML{where} ({what}); expected it in quotes, like "!x"'
        what = exc.problem or what
    return f"{file}: not valid YAML{where} ({what}); expected a YAML mapping of sections"


class Reader:
    """Reads typed values out of the parsed YAML, collecting problems instead of raising."""

    def __init__(
        self,
        data: object,
        env: Mapping[str, str],
        schema: Mapping[str, tuple[str, ...]],
        secret_vars: Mapping[str, str],
    ) -> None:
        """`schema`: each section's keys; `secret_vars`: each secret key's variable."""
        self.problems: list[str] = []
        self.env = env
        self.secret_vars = secret_vars
        self._reported: set[str] = set()
        self._sections: dict[str, Mapping[Any, Any]] = {}
        top: Mapping[Any, Any] = data if isinstance(data, Mapping) else {}
        if data is not None and not isinstance(data, Mapping):
            self.problem("(top level)", f"got {kind(data)}; expected a mapping of sections")
        self._check_keys("", top, tuple(schema))
        for name, keys in schema.items():
            section = top.get(name)
            if section is None:
                section = {}
            elif not isinstance(section, Mapping):
                self.problem(name, f"got {kind(section)}; expected a mapping of keys")
                section = {}
            self._check_keys(f"{name}.", section, keys)
            self._sections[name] = section

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{key}: {text}")
        self._reported.add(key)

    def seen(self, *keys: str) -> bool:
        """Whether a problem was already reported for any of `keys`."""
        return any(key in self._reported for key in keys)

    def _check_keys(self, prefix: str, mapping: Mapping[Any, Any], known: tuple[str, ...]) -> None:
        for key in mapping:
            if key in known:
                continue
            hint = difflib.get_close_matches(str(key), known, n=1)
            did_you_mean = f" (did you mean {hint[0]}?)" if hint else ""
            self.problem(
                f"{prefix}{key}", f"unknown key{did_you_mean}; expected one of {', '.join(known)}"
            )

    def raw(self, key: str) -> object:
        """The value for `key`: a secret's variable (or _FILE) first, then the file."""
        section, name = key.split(".")
        if key in self.secret_vars:
            var = self.secret_vars[key]
            direct, from_file = self.env.get(var) or "", self.env.get(f"{var}_FILE") or ""
            if direct and from_file:
                self.problem(key, f"both {var} and {var}_FILE are set; expected only one")
            elif direct:
                return direct
            elif from_file:
                try:
                    return Path(from_file).read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    self.problem(
                        key,
                        f"{var}_FILE names {from_file}, which cannot be read "
                        f"({reason}); expected a readable file holding the value",
                    )
        return self._sections[section].get(name)

    def text(
        self,
        key: str,
        default: str | None,
        expected: str,
        *,
        check: Callable[[str], bool] | None = None,
        nonempty: bool = False,
        placeholder: bool = False,
        numbers_ok: bool = False,
    ) -> str:
        """A string; `default` when absent, a problem when absent with no default."""
        value = self.raw(key)
        secret = key in self.secret_vars
        if self.seen(key):
            return default or ""
        if value is None:
            if default is None:
                hint = f" (or {self.secret_vars[key]})" if secret else ""
                self.problem(key, f"missing; expected {expected}{hint}")
            return default or ""
        if numbers_ok and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # `version: 2` is a fine version name
        if not isinstance(value, str):
            self.problem(key, f"got {kind(value)}; expected {expected}")
        elif (nonempty or default is None) and not value.strip():
            self.problem(key, f"empty; expected {expected}")
        elif (placeholder or secret or default is None) and looks_like_placeholder(value, secret):
            self.problem(key, "looks like a placeholder; expected a real value")
        elif value.strip() and check is not None and not check(value):
            shown = "" if secret else f"{value!r} is "
            self.problem(key, f"{shown}not valid; expected {expected}")
        else:
            return value if value.strip() else ""
        return default or ""

    def required(self, key: str, check: Callable[[str], bool], expected: str) -> str:
        return self.text(key, None, expected, check=check)

    def secret(
        self,
        key: str,
        *,
        required: bool = False,
        check: Callable[[str], bool] | None = None,
        expected: str = "a secret",
    ) -> str:
        return self.text(key, None if required else "", expected, check=check)

    def choice(
        self, key: str, default: str, options: tuple[str, ...], *, upper: bool = False
    ) -> str:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) and "off" in options:
            value = "on" if value else "off"  # YAML reads a bare off as false
        if isinstance(value, str) and (value.upper() if upper else value) in options:
            return value.upper() if upper else value
        self.problem(key, f"{value!r} is not allowed; expected one of {', '.join(options)}")
        return default

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("on", "off"):
            return value.strip().lower() == "on"
        self.problem(key, f"{value!r} is not allowed; expected on or off")
        return default

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self.problem(
            key, f"{value!r} is not allowed; expected a whole number from {low} to {high}"
        )
        return default

    def level_or_off(self, key: str) -> int | None:
        """A power level 0-100, or `off` (the default; YAML reads a bare off as false)."""
        value = self.raw(key)
        if value is None or value is False or value == "off":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
            return value
        self.problem(
            key, f"{value!r} is not allowed; expected off or a whole number from 0 to 100"
        )
        return None

    def duration(self, key: str, default: str) -> int:
        value = self.raw(key)
        try:
            if value is None:
                return parse_duration(default)
            if not isinstance(value, str):
                raise ValueError(
                    f"{value!r} has no unit: expected a number followed by s, m, "
                    "h, d, w or y, like 90m or 30d"
                )
            return parse_duration(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return parse_duration(default)

    def retention(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None or value is False:
            return None  # absent, or a bare `off` that YAML read as false
        try:
            if not isinstance(value, str):
                raise ValueError(
                    f"{value!r} is not a retention: expected off or a number "
                    "followed by s, m, h, d, w or y, like 90m or 30d"
                )
            return parse_retention(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    def listing(self, key: str, check: Callable[[str], bool], expected: str) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(key, f"got {kind(value)}; expected a list of entries, each {expected}")
            return ()
        good: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str) and check(item):
                good.append(item)
            else:
                self.problem(f"{key}[{index}]", f"{item!r} is not valid; expected {expected}")
        return tuple(good)


_PLACEHOLDER = re.compile(
    r"change[\s_-]?me|replace[\s_-]?me|placeholder|<[^<>]*>"
    r"|(?<![a-z0-9])(?:x{3,}|todo|fixme|tbd)(?![a-z0-9])",
    re.IGNORECASE,
)
_EMPTY_LOOKING = frozenset({"none", "null", "nil", "n/a", "-", "--", "...", "?", "unset", "empty"})
_GENERIC_SECRETS = frozenset({"password", "secret", "token", "key", "changeit", "admin"})
_SERVER_NAME = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?"


def looks_like_placeholder(value: str, secret: bool) -> bool:
    lowered = value.strip().lower()
    if lowered in _EMPTY_LOOKING or _PLACEHOLDER.search(lowered):
        return True
    return secret and ("example" in lowered or lowered in _GENERIC_SECRETS)


def kind(value: object) -> str:
    """A YAML-ish name for a value's type; never the value, which may be a secret."""
    names = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value


def is_postgres_url(value: str) -> bool:
    try:
        return urlsplit(value).scheme in ("postgres", "postgresql")
    except ValueError:
        return False


def is_user_id(value: str) -> bool:
    return len(value) <= 255 and bool(re.fullmatch(rf"@[^\s:]+:{_SERVER_NAME}", value))


def is_server_name(value: str) -> bool:
    return bool(re.fullmatch(_SERVER_NAME, value))


def is_timezone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def is_hours(value: str) -> bool:
    try:
        parse_hours(value)
    except ValueError:
        return False
    return True


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_listen(value: str) -> bool:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", value)
    return match is not None and int(match.group(2)) <= 65535


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_path(base_dir: Path, path: str) -> Path:
    """`path` with ~ expanded, relative to `base_dir` when not absolute."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else (base_dir / expanded).resolve()
