"""Typed, frozen configuration: YAML plus secrets from the environment, every problem at once."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.policy.archive import is_public_key
from bot.policy.durations import format_duration, parse_duration, parse_retention
from bot.policy.hours import parse_hours

DEFAULT_TERMS = (
    "Consent to text messaging with our practice.\n"
    "\n"
    "What it is for: scheduling, appointment reminders, and brief check-ins between sessions. "
    "It is not for emergencies and not a substitute for your sessions. In an emergency call 911; "
    "for the Suicide & Crisis Lifeline call or text 988.\n"
    "\n"
    "When: your clinician writes only during the contact hours you agree to, and no more often "
    "than the number of messages per day you agree to. Messages sent outside those hours are "
    "read on the next working day.\n"
    "\n"
    "The risk: messages on a phone or computer can be seen by people other than you. A lost, "
    "stolen or shared device, message previews on a lock screen, or someone else reading your "
    "device can disclose your health information without your permission. Keep your device "
    "locked, turn off message previews, and do not share your account. We cannot control who "
    "sees messages on your device.\n"
    "\n"
    "Your choice: texting is optional and your care does not depend on it. You can withdraw "
    "consent at any time by sending: !chaperone consent revoke"
)
DEFAULT_AFTER_HOURS_NOTICE = (
    "This chat is not monitored right now; your message will be read during contact hours. "
    "If this is an emergency, call 911. For the Suicide & Crisis Lifeline, call or text 988."
)

# Keys whose values are secrets: they may come from CHAPERONE_<SECTION>_<KEY>(_FILE) and are
# never repeated in a problem message or a repr.
SECRET_KEYS = (
    "homeserver.admin_token",
    "bot.password",
    "bot.access_token",
    "encryption.pickle_key",
    "encryption.recovery_key",
    "database.url",
    "audit.hmac_key",
    "http.api_token",
)

_SCHEMA: dict[str, tuple[str, ...]] = {
    "homeserver": ("url", "admin_token"),
    "bot": (
        "user_id",
        "password",
        "access_token",
        "device_name",
        "command_prefix",
        "management_room",
        "admin_min_trust",
        "data_dir",
        "dry_run",
    ),
    "encryption": ("pickle_key", "recovery_key", "recovery_key_file"),
    "database": ("url",),
    "roles": ("admins", "staff", "staff_power_level", "allowed_servers"),
    "defaults": ("consent", "enforcement", "retention", "legal_hold", "require_encryption"),
    "consent": (
        "terms",
        "version",
        "valid_days",
        "default_hours",
        "default_timezone",
        "default_max_per_day",
        "after_hours_notice",
    ),
    "retention": ("minimum", "method", "archive_public_key", "sweep_interval"),
    "audit": ("hmac_key", "retention_years"),
    "http": ("listen", "api_token"),
    "logging": ("level",),
}


class ConfigError(Exception):
    """An invalid configuration; `problems` holds one line per problem, none with a secret."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True, slots=True)
class HomeserverConfig:
    url: str
    admin_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class BotConfig:
    user_id: str
    password: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    device_name: str = "Chaperone"
    command_prefix: str = "!chaperone"
    management_room: str = ""
    admin_min_trust: str = "cross-signed"
    data_dir: str = "./data"
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class EncryptionConfig:
    pickle_key: str = field(repr=False)
    recovery_key: str = field(default="", repr=False)
    recovery_key_file: str = ""


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class RolesConfig:
    admins: tuple[str, ...] = ()
    staff: tuple[str, ...] = ()
    staff_power_level: int = 50
    allowed_servers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DefaultsConfig:
    consent: str = "required"
    enforcement: str = "redact"
    retention_seconds: int | None = None
    legal_hold: bool = False
    require_encryption: bool = True


@dataclass(frozen=True, slots=True)
class ConsentConfig:
    terms: str = DEFAULT_TERMS
    version: str = "1"
    valid_days: int = 365
    default_hours: str = "Mon-Fri 09:00-17:00"
    default_timezone: str = "America/New_York"
    default_max_per_day: int = 10
    after_hours_notice: str = DEFAULT_AFTER_HOURS_NOTICE


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    minimum_seconds: int = 3600
    method: str = "redact"
    archive_public_key: str = ""
    sweep_interval_seconds: int = 600


@dataclass(frozen=True, slots=True)
class AuditConfig:
    hmac_key: str = field(repr=False)
    retention_years: int = 6


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    api_token: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        """The host part of `listen`, without IPv6 brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return _split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class Config:
    homeserver: HomeserverConfig
    bot: BotConfig
    encryption: EncryptionConfig
    database: DatabaseConfig
    roles: RolesConfig
    defaults: DefaultsConfig
    consent: ConsentConfig
    retention: RetentionConfig
    audit: AuditConfig
    http: HttpConfig
    logging: LoggingConfig

    @property
    def recovery_key_path(self) -> Path:
        """Where the recovery key is read from or first written to."""
        if self.encryption.recovery_key_file:
            return Path(self.encryption.recovery_key_file)
        return Path(self.bot.data_dir) / "recovery-key.txt"

    def secret_values(self) -> list[str]:
        """Every non-empty secret, for masking in log lines."""
        values = [
            self.homeserver.admin_token,
            self.bot.password,
            self.bot.access_token,
            self.encryption.pickle_key,
            self.encryption.recovery_key,
            self.database.url,
            urlsplit(self.database.url).password or "",
            self.audit.hmac_key,
            self.http.api_token,
        ]
        return [value for value in values if value]


def env_var(key: str) -> str:
    """The variable overriding a secret key: bot.password → CHAPERONE_BOT_PASSWORD."""
    return "CHAPERONE_" + key.replace(".", "_").upper()


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a config file; ConfigError lists every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{file}: no such file; expected a config file (copy config.example.yaml)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            [f"{file}: cannot be read ({reason}); expected a readable YAML file"]
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(file, exc)]) from None
    return parse_config(data, os.environ if env is None else env, file.resolve().parent)


def _yaml_problem(file: Path, exc: yaml.YAMLError) -> str:
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


def parse_config(data: object, env: Mapping[str, str], base_dir: Path) -> Config:
    """Validate parsed YAML into a Config; relative paths resolve against `base_dir`."""
    r = _Reader(data, env)
    homeserver = HomeserverConfig(
        url=r.required(
            "homeserver.url", _is_http_url, "an http or https URL, like https://matrix.example.org"
        ),
        admin_token=r.secret("homeserver.admin_token"),
    )
    data_dir = r.text("bot.data_dir", "./data", "a directory path")
    bot = BotConfig(
        user_id=r.required("bot.user_id", _is_user_id, "a Matrix user ID, like @chaperone:server"),
        password=r.secret("bot.password"),
        access_token=r.secret("bot.access_token"),
        device_name=r.text("bot.device_name", "Chaperone", "a device name", nonempty=True),
        command_prefix=r.text(
            "bot.command_prefix",
            "!chaperone",
            "a word like !chaperone",
            check=lambda v: bool(re.fullmatch(r"\S+", v)),
        ),
        management_room=r.text(
            "bot.management_room",
            "",
            "a room ID like !abc:server, or empty",
            check=lambda v: v == "" or bool(re.fullmatch(r"![^\s]+", v)),
            placeholder=True,
        ),
        admin_min_trust=r.choice(
            "bot.admin_min_trust", "cross-signed", ("any", "cross-signed", "verified")
        ),
        data_dir=str(_resolve(base_dir, data_dir or "./data")),
        dry_run=r.flag("bot.dry_run", False),
    )
    if (
        not bot.password
        and not bot.access_token
        and not r.seen("bot.password", "bot.access_token")
    ):
        r.problem(
            "bot.password",
            "missing; expected bot.password or bot.access_token (or "
            f"{env_var('bot.password')} / {env_var('bot.access_token')})",
        )
    key_file = r.text("encryption.recovery_key_file", "", "a file path")
    encryption = EncryptionConfig(
        pickle_key=r.secret("encryption.pickle_key", required=True),
        recovery_key=r.secret("encryption.recovery_key"),
        recovery_key_file=str(_resolve(base_dir, key_file)) if key_file else "",
    )
    database = DatabaseConfig(
        url=r.secret(
            "database.url",
            check=_is_postgres_url,
            expected="a postgresql:// URL, or empty for the embedded Postgres",
        )
    )
    roles = RolesConfig(
        admins=r.listing("roles.admins", _is_user_id, "a Matrix user ID like @name:server"),
        staff=r.listing("roles.staff", _is_user_id, "a Matrix user ID like @name:server"),
        staff_power_level=r.integer("roles.staff_power_level", 50, 0, 100),
        allowed_servers=r.listing(
            "roles.allowed_servers", _is_server_name, "a server name like example.org"
        ),
    )
    defaults = DefaultsConfig(
        consent=r.choice("defaults.consent", "required", ("required", "off")),
        enforcement=r.choice("defaults.enforcement", "redact", ("redact", "warn", "audit")),
        retention_seconds=r.retention("defaults.retention"),
        legal_hold=r.flag("defaults.legal_hold", False),
        require_encryption=r.flag("defaults.require_encryption", True),
    )
    consent = ConsentConfig(
        terms=r.text("consent.terms", DEFAULT_TERMS, "the consent form text", nonempty=True),
        version=r.text(
            "consent.version", "1", "a version name like 2026-01", nonempty=True, numbers_ok=True
        ),
        valid_days=r.integer("consent.valid_days", 365, 1, 36500),
        default_hours=r.text(
            "consent.default_hours",
            "Mon-Fri 09:00-17:00",
            "hours like Mon-Fri 09:00-17:00 or daily 08:00-20:00; ranges separated by ;",
            check=_is_hours,
        ),
        default_timezone=r.text(
            "consent.default_timezone",
            "America/New_York",
            "an IANA time zone like America/New_York",
            check=_is_timezone,
        ),
        default_max_per_day=r.integer("consent.default_max_per_day", 10, 1, 1000),
        after_hours_notice=r.text(
            "consent.after_hours_notice",
            DEFAULT_AFTER_HOURS_NOTICE,
            "the notice text",
            nonempty=True,
        ),
    )
    retention = RetentionConfig(
        minimum_seconds=r.duration("retention.minimum", "1h"),
        method=r.choice("retention.method", "redact", ("redact", "purge")),
        archive_public_key=r.text(
            "retention.archive_public_key",
            "",
            "the public key printed by chaperone keygen, or empty",
            check=is_public_key,
            placeholder=True,
        ),
        sweep_interval_seconds=r.duration("retention.sweep_interval", "10m"),
    )
    audit = AuditConfig(
        hmac_key=r.secret(
            "audit.hmac_key",
            required=True,
            check=lambda v: len(v) >= 16,
            expected="at least 16 characters",
        ),
        retention_years=r.integer("audit.retention_years", 6, 6, 100),
    )
    http = HttpConfig(
        listen=r.text(
            "http.listen", "127.0.0.1:8080", "host:port, like 127.0.0.1:8080", check=_is_listen
        ),
        api_token=r.secret("http.api_token"),
    )
    logging = LoggingConfig(
        level=r.choice(
            "logging.level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True
        )
    )
    minimum = retention.minimum_seconds
    if defaults.retention_seconds is not None and defaults.retention_seconds < minimum:
        r.problem(
            "defaults.retention",
            f"{format_duration(defaults.retention_seconds)} is "
            f"shorter than retention.minimum; expected at least {format_duration(minimum)}",
        )
    if (
        retention.method == "purge"
        and not homeserver.admin_token
        and not r.seen("homeserver.admin_token")
    ):
        r.problem(
            "retention.method",
            "purge needs homeserver.admin_token; expected a Synapse admin token, or method redact",
        )
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        homeserver,
        bot,
        encryption,
        database,
        roles,
        defaults,
        consent,
        retention,
        audit,
        http,
        logging,
    )


def check_warnings(config: Config) -> list[str]:
    """Non-fatal concerns about a valid config, one line each, for check-config and start-up."""
    warnings: list[str] = []
    retention = config.defaults.retention_seconds
    if not config.retention.archive_public_key:
        if retention is not None:
            warnings.append(
                f"defaults.retention: on ({format_duration(retention)}) with no "
                "retention.archive_public_key; swept messages are destroyed with no "
                "archived copy"
            )
        else:
            warnings.append(
                "retention.archive_public_key: empty; any room given a retention "
                "will have its swept messages destroyed with no archived copy"
            )
    if config.bot.dry_run:
        warnings.append("bot.dry_run: on; the bot records what it would do but changes nothing")
    if not config.bot.management_room:
        warnings.append(
            "bot.management_room: empty; alerts (violations, posture drift, "
            "failures) are only logged"
        )
    if not config.roles.admins:
        warnings.append("roles.admins: empty; nobody can run admin commands")
    if config.bot.admin_min_trust == "any":
        warnings.append(
            "bot.admin_min_trust: any; admin commands are accepted from unverified devices"
        )
    if config.bot.password and config.bot.access_token:
        warnings.append("bot.password: set together with bot.access_token; the token is used")
    if config.defaults.consent == "off":
        warnings.append("defaults.consent: off; new rooms are used without patient consent")
    if not config.defaults.require_encryption:
        warnings.append("defaults.require_encryption: off; unencrypted rooms are not reported")
    if not config.http.api_token:
        warnings.append("http.api_token: empty; the audit API refuses every request")
    if not _is_loopback(config.http.host):
        warnings.append(
            f"http.listen: {config.http.listen} is reachable from other hosts and "
            "serves plain HTTP; put a TLS proxy in front of it"
        )
    if config.consent.terms == DEFAULT_TERMS:
        warnings.append(
            "consent.terms: not set; the built-in consent form is used, review it "
            "with your practice"
        )
    return warnings


class _Reader:
    """Reads typed values out of the parsed YAML, collecting problems instead of raising."""

    def __init__(self, data: object, env: Mapping[str, str]) -> None:
        self.problems: list[str] = []
        self.env = env
        self._reported: set[str] = set()
        self._sections: dict[str, Mapping[Any, Any]] = {}
        top: Mapping[Any, Any] = data if isinstance(data, Mapping) else {}
        if data is not None and not isinstance(data, Mapping):
            self.problem("(top level)", f"got {_kind(data)}; expected a mapping of sections")
        self._check_keys("", top, tuple(_SCHEMA))
        for name, keys in _SCHEMA.items():
            section = top.get(name)
            if section is None:
                section = {}
            elif not isinstance(section, Mapping):
                self.problem(name, f"got {_kind(section)}; expected a mapping of keys")
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
        if key in SECRET_KEYS:
            var = env_var(key)
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
        secret = key in SECRET_KEYS
        if self.seen(key):
            return default or ""
        if value is None:
            if default is None:
                hint = f" (or {env_var(key)})" if secret else ""
                self.problem(key, f"missing; expected {expected}{hint}")
            return default or ""
        if numbers_ok and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # `version: 2` is a fine version name
        if not isinstance(value, str):
            self.problem(key, f"got {_kind(value)}; expected {expected}")
        elif (nonempty or default is None) and not value.strip():
            self.problem(key, f"empty; expected {expected}")
        elif (placeholder or secret or default is None) and _looks_like_placeholder(value, secret):
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
            self.problem(key, f"got {_kind(value)}; expected a list of entries, each {expected}")
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


def _looks_like_placeholder(value: str, secret: bool) -> bool:
    lowered = value.strip().lower()
    if lowered in _EMPTY_LOOKING or _PLACEHOLDER.search(lowered):
        return True
    return secret and ("example" in lowered or lowered in _GENERIC_SECRETS)


def _kind(value: object) -> str:
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


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value


def _is_postgres_url(value: str) -> bool:
    try:
        return urlsplit(value).scheme in ("postgres", "postgresql")
    except ValueError:
        return False


def _is_user_id(value: str) -> bool:
    return len(value) <= 255 and bool(re.fullmatch(rf"@[^\s:]+:{_SERVER_NAME}", value))


def _is_server_name(value: str) -> bool:
    return bool(re.fullmatch(_SERVER_NAME, value))


def _is_timezone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _is_hours(value: str) -> bool:
    try:
        parse_hours(value)
    except ValueError:
        return False
    return True


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _is_listen(value: str) -> bool:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", value)
    return match is not None and int(match.group(2)) <= 65535


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(base_dir: Path, path: str) -> Path:
    """`path` with ~ expanded, relative to `base_dir` when not absolute."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else (base_dir / expanded).resolve()
