"""Typed, frozen configuration: YAML plus secrets from the environment, every problem at once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self
from urllib.parse import urlsplit

import yaml
from mautrix.types import RoomID, UserID

from bot.config_reader import (
    Reader,
    is_hours,
    is_http_url,
    is_listen,
    is_loopback,
    is_postgres_url,
    is_server_name,
    is_timezone,
    is_user_id,
    resolve_path,
    split_listen,
    yaml_problem,
)
from bot.policy.archive import is_public_key
from bot.policy.durations import format_duration
from bot.policy.room_policy import FIELDS, POLICY_FIELDS, RoomPolicy

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
    "database.owner_url",
    "audit.hmac_key",
    "http.api_token",
)


class ConfigError(Exception):
    """An invalid configuration; `problems` holds one line per problem, none with a secret."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# Each section: a frozen dataclass with its config keys (KEYS) and a `read` that takes its
# values from the Reader, which collects every problem instead of stopping at the first.


@dataclass(frozen=True, slots=True)
class HomeserverConfig:
    url: str
    admin_token: str = field(default="", repr=False)

    KEYS: ClassVar = ("url", "admin_token")

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            url=r.required(
                "homeserver.url",
                is_http_url,
                "an http or https URL, like https://matrix.example.org",
            ),
            admin_token=r.secret("homeserver.admin_token"),
        )


@dataclass(frozen=True, slots=True)
class BotConfig:
    user_id: UserID
    password: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    device_name: str = "Chaperone"
    command_prefix: str = "!chaperone"
    management_room: RoomID = RoomID("")  # "": none configured
    admin_min_trust: str = "cross-signed"
    data_dir: str = "./data"
    dry_run: bool = False

    KEYS: ClassVar = (
        "user_id",
        "password",
        "access_token",
        "device_name",
        "command_prefix",
        "management_room",
        "admin_min_trust",
        "data_dir",
        "dry_run",
    )

    @classmethod
    def read(cls, r: Reader, base_dir: Path) -> Self:
        data_dir = r.text("bot.data_dir", "./data", "a directory path")
        bot = cls(
            user_id=UserID(
                r.required("bot.user_id", is_user_id, "a Matrix user ID, like @chaperone:server")
            ),
            password=r.secret("bot.password"),
            access_token=r.secret("bot.access_token"),
            device_name=r.text("bot.device_name", "Chaperone", "a device name", nonempty=True),
            command_prefix=r.text(
                "bot.command_prefix",
                "!chaperone",
                "a word like !chaperone",
                check=lambda v: bool(re.fullmatch(r"\S+", v)),
            ),
            management_room=RoomID(
                r.text(
                    "bot.management_room",
                    "",
                    "a room ID like !abc:server, or empty",
                    check=lambda v: v == "" or bool(re.fullmatch(r"![^\s]+", v)),
                    placeholder=True,
                )
            ),
            admin_min_trust=r.choice(
                "bot.admin_min_trust", "cross-signed", ("any", "cross-signed", "verified")
            ),
            data_dir=str(resolve_path(base_dir, data_dir or "./data")),
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
        return bot


@dataclass(frozen=True, slots=True)
class EncryptionConfig:
    pickle_key: str = field(repr=False)
    recovery_key: str = field(default="", repr=False)
    recovery_key_file: str = ""

    KEYS: ClassVar = ("pickle_key", "recovery_key", "recovery_key_file")

    @classmethod
    def read(cls, r: Reader, base_dir: Path) -> Self:
        key_file = r.text("encryption.recovery_key_file", "", "a file path")
        return cls(
            pickle_key=r.secret("encryption.pickle_key", required=True),
            recovery_key=r.secret("encryption.recovery_key"),
            recovery_key_file=str(resolve_path(base_dir, key_file)) if key_file else "",
        )


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = field(default="", repr=False)
    owner_url: str = field(default="", repr=False)

    KEYS: ClassVar = ("url", "owner_url")

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            url=r.secret(
                "database.url",
                check=is_postgres_url,
                expected="a postgresql:// URL, or empty for the embedded Postgres",
            ),
            owner_url=r.secret(
                "database.owner_url",
                check=is_postgres_url,
                expected="a postgresql:// URL of the role that owns the tables, or empty",
            ),
        )


@dataclass(frozen=True, slots=True)
class RolesConfig:
    admins: tuple[UserID, ...] = ()
    staff: tuple[UserID, ...] = ()
    staff_power_level: int | None = None  # None: room power never makes anyone staff
    allowed_servers: tuple[str, ...] = ()

    KEYS: ClassVar = ("admins", "staff", "staff_power_level", "allowed_servers")

    @classmethod
    def read(cls, r: Reader) -> Self:
        user_id = "a Matrix user ID like @name:server"
        return cls(
            admins=tuple(map(UserID, r.listing("roles.admins", is_user_id, user_id))),
            staff=tuple(map(UserID, r.listing("roles.staff", is_user_id, user_id))),
            staff_power_level=r.level_or_off("roles.staff_power_level"),
            allowed_servers=r.listing(
                "roles.allowed_servers", is_server_name, "a server name like example.org"
            ),
        )


# The `defaults` section is the policy of a room no admin has changed; its keys, defaults and
# readers are the policy fields declared on RoomPolicy.
DefaultsConfig = RoomPolicy


def _read_defaults(r: Reader) -> DefaultsConfig:
    values = {
        spec.attribute: spec.kind.read(r, f"defaults.{name}", spec.default)
        for name, spec in POLICY_FIELDS.items()
    }
    return DefaultsConfig(**values)


@dataclass(frozen=True, slots=True)
class ConsentConfig:
    terms: str = DEFAULT_TERMS
    version: str = "1"
    valid_days: int = 365
    default_hours: str = "Mon-Fri 09:00-17:00"
    default_timezone: str = "America/New_York"
    default_max_per_day: int = 10
    after_hours_notice: str = DEFAULT_AFTER_HOURS_NOTICE

    KEYS: ClassVar = (
        "terms",
        "version",
        "valid_days",
        "default_hours",
        "default_timezone",
        "default_max_per_day",
        "after_hours_notice",
    )

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            terms=r.text("consent.terms", DEFAULT_TERMS, "the consent form text", nonempty=True),
            version=r.text(
                "consent.version",
                "1",
                "a version name like 2026-01",
                nonempty=True,
                numbers_ok=True,
            ),
            valid_days=r.integer("consent.valid_days", 365, 1, 36500),
            default_hours=r.text(
                "consent.default_hours",
                "Mon-Fri 09:00-17:00",
                "hours like Mon-Fri 09:00-17:00 or daily 08:00-20:00; ranges separated by ;",
                check=is_hours,
            ),
            default_timezone=r.text(
                "consent.default_timezone",
                "America/New_York",
                "an IANA time zone like America/New_York",
                check=is_timezone,
            ),
            default_max_per_day=r.integer("consent.default_max_per_day", 10, 1, 1000),
            after_hours_notice=r.text(
                "consent.after_hours_notice",
                DEFAULT_AFTER_HOURS_NOTICE,
                "the notice text",
                nonempty=True,
            ),
        )


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    minimum_seconds: int = 3600
    method: str = "redact"
    archive_public_key: str = ""
    sweep_interval_seconds: int = 600

    KEYS: ClassVar = ("minimum", "method", "archive_public_key", "sweep_interval")

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
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


@dataclass(frozen=True, slots=True)
class AuditConfig:
    hmac_key: str = field(repr=False)
    retention_years: int = 6
    checkpoint_interval_seconds: int = 3600
    checkpoint_file: str = ""

    KEYS: ClassVar = ("hmac_key", "retention_years", "checkpoint_interval", "checkpoint_file")

    @classmethod
    def read(cls, r: Reader, base_dir: Path) -> Self:
        checkpoint_file = r.text("audit.checkpoint_file", "", "a file path, or empty")
        return cls(
            hmac_key=r.secret(
                "audit.hmac_key",
                required=True,
                check=lambda v: len(v) >= 16,
                expected="at least 16 characters",
            ),
            retention_years=r.integer("audit.retention_years", 6, 6, 100),
            checkpoint_interval_seconds=r.duration("audit.checkpoint_interval", "1h"),
            checkpoint_file=(
                str(resolve_path(base_dir, checkpoint_file)) if checkpoint_file else ""
            ),
        )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "127.0.0.1:8080"
    api_token: str = field(default="", repr=False)

    KEYS: ClassVar = ("listen", "api_token")

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            listen=r.text(
                "http.listen", "127.0.0.1:8080", "host:port, like 127.0.0.1:8080", check=is_listen
            ),
            api_token=r.secret(
                "http.api_token",
                check=lambda v: len(v) >= 32,
                expected="at least 32 characters (e.g. openssl rand -hex 32)",
            ),
        )

    @property
    def host(self) -> str:
        """The host part of `listen`, without IPv6 brackets."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"

    KEYS: ClassVar = ("level",)

    @classmethod
    def read(cls, r: Reader) -> Self:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        return cls(level=r.choice("logging.level", "INFO", levels, upper=True))


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
            self.database.owner_url,
            urlsplit(self.database.owner_url).password or "",
            self.audit.hmac_key,
            self.http.api_token,
        ]
        return [value for value in values if value]


_SCHEMA = {
    "homeserver": HomeserverConfig.KEYS,
    "bot": BotConfig.KEYS,
    "encryption": EncryptionConfig.KEYS,
    "database": DatabaseConfig.KEYS,
    "roles": RolesConfig.KEYS,
    "defaults": FIELDS,
    "consent": ConsentConfig.KEYS,
    "retention": RetentionConfig.KEYS,
    "audit": AuditConfig.KEYS,
    "http": HttpConfig.KEYS,
    "logging": LoggingConfig.KEYS,
}


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
        raise ConfigError([yaml_problem(file, exc)]) from None
    return parse_config(data, os.environ if env is None else env, file.resolve().parent)


def parse_config(data: object, env: Mapping[str, str], base_dir: Path) -> Config:
    """Validate parsed YAML into a Config; relative paths resolve against `base_dir`."""
    r = Reader(data, env, _SCHEMA, {key: env_var(key) for key in SECRET_KEYS})
    config = Config(
        homeserver=HomeserverConfig.read(r),
        bot=BotConfig.read(r, base_dir),
        encryption=EncryptionConfig.read(r, base_dir),
        database=DatabaseConfig.read(r),
        roles=RolesConfig.read(r),
        defaults=_read_defaults(r),
        consent=ConsentConfig.read(r),
        retention=RetentionConfig.read(r),
        audit=AuditConfig.read(r, base_dir),
        http=HttpConfig.read(r),
        logging=LoggingConfig.read(r),
    )
    _check_across_sections(config, r)
    if r.problems:
        raise ConfigError(r.problems)
    return config


def _check_across_sections(config: Config, r: Reader) -> None:
    minimum = config.retention.minimum_seconds
    retention = config.defaults.retention_seconds
    if retention is not None and retention < minimum:
        r.problem(
            "defaults.retention",
            f"{format_duration(retention)} is "
            f"shorter than retention.minimum; expected at least {format_duration(minimum)}",
        )
    if (
        config.retention.method == "purge"
        and not config.homeserver.admin_token
        and not r.seen("homeserver.admin_token")
    ):
        r.problem(
            "retention.method",
            "purge needs homeserver.admin_token; expected a Synapse admin token, or method redact",
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
    if config.database.owner_url and not config.database.url:
        warnings.append(
            "database.owner_url: ignored while database.url is empty; the embedded Postgres "
            "sets up both roles itself"
        )
    if config.database.url and not config.database.owner_url:
        warnings.append(
            "database.owner_url: empty; the bot's role runs the migrations and owns the "
            "tables, so it could disable the audit triggers and rewrite history"
        )
    if not config.audit.checkpoint_file:
        warnings.append(
            "audit.checkpoint_file: empty; audit checkpoints go only to the management room, "
            "and the CLI cannot detect a cut tail"
        )
    if not config.http.api_token:
        warnings.append("http.api_token: empty; the audit API refuses every request")
    if not is_loopback(config.http.host):
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
