"""Config loading: valid files load, every problem is listed at once, secrets never leak."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from mautrix.types import UserID

from bot.config import (
    SECRET_KEYS,
    Config,
    ConfigError,
    check_warnings,
    env_var,
    load_config,
    parse_config,
)
from bot.policy.room_policy import RoomPolicy

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"

VALID: dict[str, Any] = {
    "homeserver": {"url": "https://matrix.clinic.test"},
    "bot": {
        "user_id": "@chaperone:clinic.test",
        "password": "correct-horse-battery",
        "data_dir": "state",
    },
    "encryption": {"pickle_key": "pickle-key-0123456789"},
    "audit": {"hmac_key": "hmac-key-0123456789abcdef"},
    "roles": {"admins": ["@admin:clinic.test"], "staff": ["@therapist:clinic.test"]},
    "defaults": {"retention": "30d"},
}

# Real-looking values for every secret key, each valid where it is checked.
SECRET_SAMPLES = {
    "homeserver.admin_token": "syt_YWRtaW4_adminTokenValue_1a2b3c",
    "bot.password": "env-password-4d5e6f",
    "bot.access_token": "syt_Y2hhcGVyb25l_botTokenValue_7g8h9i",
    "encryption.pickle_key": "env-pickle-key-0j1k2l",
    "encryption.recovery_key": "EsTc 9YhT recoveryKeyValue 3m4n5o",
    "database.url": "postgresql://chaperone:dbPassw0rd6p7q@db.internal:5432/chaperone",
    "database.owner_url": "postgresql://owner:ownerPassw0rd@db.internal:5432/chaperone",
    "audit.hmac_key": "env-hmac-key-8r9s0t1u2v3w",
    "http.api_token": "env-api-token-4x5y6z-0123456789abcdef",
}


DELETE = object()


def config_with(**changes: Any) -> dict[str, Any]:
    """VALID with dotted keys changed (`bot__user_id=...`); the value DELETE removes a key."""
    data = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if not key:
            data[section] = value
        elif value is DELETE:
            data.get(section, {}).pop(key, None)
        else:
            data.setdefault(section, {})[key] = value
    return data


def problems_of(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env or {}, Path("/srv/chaperone"))
    return caught.value.problems


def write(directory: Path, data: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={})
    assert isinstance(config, Config)
    assert config.homeserver.url == "https://matrix.clinic.test"
    assert config.bot.user_id == "@chaperone:clinic.test"
    assert config.bot.password == "correct-horse-battery"
    assert config.roles.admins == ("@admin:clinic.test",)
    assert config.roles.staff == ("@therapist:clinic.test",)
    assert config.defaults.retention_seconds == 30 * 86400
    assert config.bot.data_dir == str(tmp_path / "state")


def test_defaults_apply_when_optional_keys_are_absent(tmp_path: Path) -> None:
    config = parse_config(config_with(roles=None, defaults=None), {}, tmp_path)
    assert config.bot.device_name == "Chaperone"
    assert config.bot.command_prefix == "!chaperone"
    assert config.bot.management_room == ""
    assert config.bot.admin_min_trust == "cross-signed"
    assert config.bot.dry_run is False
    assert config.homeserver.admin_token == ""
    assert config.database.url == ""
    assert config.roles.admins == ()
    assert config.roles.staff_power_level is None  # off: room power never makes staff
    assert config.roles.allowed_servers == ()
    assert config.defaults.consent == "required"
    assert config.defaults.enforcement == "redact"
    assert config.defaults.retention_seconds is None
    assert config.defaults.legal_hold is False
    assert config.defaults.require_encryption is True
    assert config.consent.valid_days == 365
    assert config.consent.default_hours == "Mon-Fri 09:00-17:00"
    assert config.consent.default_timezone == "America/New_York"
    assert config.consent.default_max_per_day == 10
    assert "911" in config.consent.after_hours_notice
    assert "988" in config.consent.after_hours_notice
    assert "consent revoke" in config.consent.terms
    assert config.retention.minimum_seconds == 3600
    assert config.retention.method == "redact"
    assert config.retention.sweep_interval_seconds == 600
    assert config.audit.retention_years == 6
    assert config.http.listen == "127.0.0.1:8080"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.logging.level == "INFO"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = parse_config(copy.deepcopy(VALID), {}, tmp_path)
    with pytest.raises(AttributeError):
        config.bot.user_id = UserID("@other:clinic.test")  # type: ignore[misc]


def test_example_file_fails_listing_its_placeholders() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, env={})
    problems = caught.value.problems
    for key in ("bot.password", "encryption.pickle_key", "audit.hmac_key", "http.api_token"):
        assert any(p.startswith(f"{key}: looks like a placeholder") for p in problems), key
    assert all("placeholder" in p for p in problems), problems


def test_example_file_documents_every_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    config_keys = {
        "homeserver": {"url", "admin_token"},
        "bot": {
            "user_id",
            "password",
            "access_token",
            "device_name",
            "command_prefix",
            "management_room",
            "admin_min_trust",
            "data_dir",
            "dry_run",
        },
        "encryption": {"pickle_key", "recovery_key", "recovery_key_file"},
        "database": {"url", "owner_url"},
        "roles": {"admins", "staff", "staff_power_level", "allowed_servers"},
        "defaults": {"consent", "enforcement", "retention", "legal_hold", "require_encryption"},
        "consent": {
            "terms",
            "version",
            "valid_days",
            "default_hours",
            "default_timezone",
            "default_max_per_day",
            "after_hours_notice",
        },
        "retention": {"minimum", "method", "archive_public_key", "sweep_interval"},
        "audit": {"hmac_key", "retention_years", "checkpoint_interval", "checkpoint_file"},
        "http": {"listen", "api_token"},
        "logging": {"level"},
    }
    assert {section: set(keys) for section, keys in data.items()} == config_keys
    for key in ("bot.password", "encryption.pickle_key", "audit.hmac_key", "http.api_token"):
        assert env_var(key) in text


def test_example_terms_are_a_real_consent_form() -> None:
    terms = " ".join(yaml.safe_load(EXAMPLE.read_text())["consent"]["terms"].lower().split())
    for phrase in (
        "scheduling",
        "reminders",
        "check-ins",
        "not for emergencies",
        "911",
        "988",
        "hours",
        "per day",
        "lost",
        "lock screen",
        "shared",
        "!chaperone consent revoke",
    ):
        assert phrase in terms, phrase


def test_example_file_loads_once_secrets_come_from_the_environment() -> None:
    env = {
        env_var(key): SECRET_SAMPLES[key]
        for key in SECRET_KEYS
        if key not in ("database.url", "database.owner_url")
    }
    env.pop(env_var("homeserver.admin_token"))
    config = load_config(EXAMPLE, env=env)
    assert config.audit.hmac_key == SECRET_SAMPLES["audit.hmac_key"]
    assert config.bot.data_dir == str(EXAMPLE.parent / "data")


def test_every_problem_is_listed_at_once() -> None:
    data = config_with(
        homeserver__url="matrix.clinic.test",
        bot__user_id="chaperone",
        bot__comand_prefix="!cp",
        retention__minimum="5x",
        defaults__enforcement="delete",
        consent__default_timezone="Mars/Base",
    )
    problems = problems_of(data)
    expected = [
        "homeserver.url",
        "bot.user_id",
        "bot.comand_prefix",
        "retention.minimum",
        "defaults.enforcement",
        "consent.default_timezone",
    ]
    for key in expected:
        assert any(p.startswith(f"{key}: ") for p in problems), key
    assert len(problems) == len(expected), problems
    assert any("did you mean command_prefix?" in p for p in problems)
    assert any("'5x' is not a duration" in p for p in problems)
    assert any("'Mars/Base'" in p for p in problems)
    assert all("\n" not in p and "expected" in p for p in problems)


def test_problems_come_section_by_section_then_across_sections() -> None:
    data = config_with(
        logging__level="LOUD",
        bot__dry_run="maybe",
        homeserver__url="matrix.clinic.test",
        defaults__retention="30m",
        retention__method="purge",
        extra={},
    )
    keys = [problem.split(": ")[0] for problem in problems_of(data)]
    assert keys == [
        "extra",
        "homeserver.url",
        "bot.dry_run",
        "logging.level",
        "defaults.retention",
        "retention.method",
    ]


def test_defaults_section_is_the_policy_of_an_unchanged_room(tmp_path: Path) -> None:
    assert parse_config(config_with(defaults=None), {}, tmp_path).defaults == RoomPolicy()
    data = config_with(defaults={"retention": "2d", "legal_hold": "on", "consent": "off"})
    assert parse_config(data, {}, tmp_path).defaults == RoomPolicy(
        consent="off", retention_seconds=2 * 86400, legal_hold=True
    )


@pytest.mark.parametrize(
    ("changes", "key", "fragment"),
    [
        ({"homeserver__url": "ftp://matrix.clinic.test"}, "homeserver.url", "http or https"),
        ({"homeserver__url": "https://"}, "homeserver.url", "http or https"),
        ({"homeserver__url": 42}, "homeserver.url", "got a number"),
        ({"bot__user_id": "@chaperone"}, "bot.user_id", "Matrix user ID"),
        ({"bot__user_id": "chaperone:clinic.test"}, "bot.user_id", "Matrix user ID"),
        ({"bot__command_prefix": "! chaperone"}, "bot.command_prefix", "expected a word"),
        ({"bot__management_room": "#clinic:clinic.test"}, "bot.management_room", "room ID"),
        ({"bot__admin_min_trust": "trusted"}, "bot.admin_min_trust", "any, cross-signed"),
        ({"bot__dry_run": "maybe"}, "bot.dry_run", "on or off"),
        ({"bot__device_name": ""}, "bot.device_name", "empty"),
        ({"roles__admins": ["@admin:clinic.test", "admin"]}, "roles.admins[1]", "user ID"),
        ({"roles__admins": "@admin:clinic.test"}, "roles.admins", "a list"),
        ({"roles__staff": [7]}, "roles.staff[0]", "user ID"),
        ({"roles__staff_power_level": 101}, "roles.staff_power_level", "from 0 to 100"),
        ({"roles__staff_power_level": -1}, "roles.staff_power_level", "from 0 to 100"),
        ({"roles__staff_power_level": "50"}, "roles.staff_power_level", "expected off or"),
        ({"roles__staff_power_level": True}, "roles.staff_power_level", "whole number"),
        ({"roles__staff_power_level": "on"}, "roles.staff_power_level", "expected off or"),
        ({"roles__staff_power_level": 50.5}, "roles.staff_power_level", "whole number"),
        ({"roles__allowed_servers": ["bad server"]}, "roles.allowed_servers[0]", "server name"),
        ({"defaults__consent": "maybe"}, "defaults.consent", "required, off"),
        ({"defaults__consent": True}, "defaults.consent", "required, off"),
        ({"defaults__enforcement": "delete"}, "defaults.enforcement", "redact, warn, audit"),
        ({"defaults__retention": "5x"}, "defaults.retention", "'5x' is not a retention"),
        ({"defaults__retention": 30}, "defaults.retention", "expected off or a number"),
        ({"defaults__retention": "30m"}, "defaults.retention", "at least 1h"),
        ({"defaults__legal_hold": "sometimes"}, "defaults.legal_hold", "on or off"),
        ({"consent__default_hours": "9 to 5"}, "consent.default_hours", "Mon-Fri 09:00-17:00"),
        ({"consent__default_hours": "Mon-Fri 09:00-25:00"}, "consent.default_hours", "hours"),
        ({"consent__default_timezone": "Mars/Base"}, "consent.default_timezone", "IANA"),
        ({"consent__valid_days": 0}, "consent.valid_days", "whole number"),
        ({"consent__default_max_per_day": 0}, "consent.default_max_per_day", "whole number"),
        ({"consent__terms": "  "}, "consent.terms", "empty"),
        ({"retention__minimum": "5x"}, "retention.minimum", "'5x' is not a duration"),
        ({"retention__minimum": 3600}, "retention.minimum", "has no unit"),
        ({"retention__sweep_interval": "0s"}, "retention.sweep_interval", "longer than zero"),
        ({"retention__method": "shred"}, "retention.method", "redact, purge"),
        ({"retention__method": "purge"}, "retention.method", "homeserver.admin_token"),
        ({"audit__retention_years": 5}, "audit.retention_years", "from 6"),
        ({"http__listen": "8080"}, "http.listen", "host:port"),
        ({"http__listen": "localhost:99999"}, "http.listen", "host:port"),
        ({"logging__level": "LOUD"}, "logging.level", "DEBUG, INFO"),
        ({"database__url": "mysql://db/chaperone"}, "database.url", "postgresql://"),
        ({"bots": {}}, "bots", "unknown key (did you mean bot?)"),
        ({"http__port": 8080}, "http.port", "unknown key; expected one of listen, api_token"),
        ({"audit": ["hmac_key"]}, "audit", "expected a mapping"),
    ],
)
def test_each_invalid_value_is_one_problem_naming_its_key(
    changes: dict[str, Any], key: str, fragment: str
) -> None:
    problems = problems_of(config_with(**changes))
    if key == "audit":  # the whole section is unusable, so its required key is missing too
        assert problems[0].startswith("audit: ") and fragment in problems[0]
        return
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: "), problems
    assert fragment in problems[0]


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"defaults__consent": "off"}, lambda c: c.defaults.consent == "off"),
        ({"defaults__consent": False}, lambda c: c.defaults.consent == "off"),
        ({"defaults__retention": False}, lambda c: c.defaults.retention_seconds is None),
        ({"defaults__retention": "off"}, lambda c: c.defaults.retention_seconds is None),
        ({"defaults__legal_hold": "on"}, lambda c: c.defaults.legal_hold is True),
        ({"defaults__legal_hold": True}, lambda c: c.defaults.legal_hold is True),
        ({"defaults__require_encryption": "off"}, lambda c: not c.defaults.require_encryption),
        ({"logging__level": "debug"}, lambda c: c.logging.level == "DEBUG"),
        ({"consent__version": 2}, lambda c: c.consent.version == "2"),
        ({"consent__default_hours": "Mon-Fri 09:00-12:00; Sat 10:00-12:00"}, lambda c: True),
        ({"consent__default_hours": "daily 22:00-06:00"}, lambda c: True),
        ({"consent__default_hours": "Mon,Wed,Fri 08:00-20:00"}, lambda c: True),
        ({"retention__minimum": "1s"}, lambda c: c.retention.minimum_seconds == 1),
        ({"http__listen": "[::1]:0"}, lambda c: (c.http.host, c.http.port) == ("::1", 0)),
        (
            {"bot__password": DELETE, "bot__access_token": "syt_abc_def"},
            lambda c: c.bot.access_token == "syt_abc_def",
        ),
        ({"bot__user_id": "@chaperone:127.0.0.1:8448"}, lambda c: True),
        (
            {"roles__allowed_servers": ["clinic.test", "[::1]:8448"]},
            lambda c: c.roles.allowed_servers == ("clinic.test", "[::1]:8448"),
        ),
        ({"bot__management_room": "!abcdef:clinic.test"}, lambda c: True),
        ({"roles__staff_power_level": "off"}, lambda c: c.roles.staff_power_level is None),
        ({"roles__staff_power_level": False}, lambda c: c.roles.staff_power_level is None),
        ({"roles__staff_power_level": 0}, lambda c: c.roles.staff_power_level == 0),
        ({"roles__staff_power_level": 100}, lambda c: c.roles.staff_power_level == 100),
        ({"homeserver__url": "http://127.0.0.1:8008/"}, lambda c: True),
    ],
)
def test_accepted_forms(changes: dict[str, Any], check: Any, tmp_path: Path) -> None:
    assert check(parse_config(config_with(**changes), {}, tmp_path))


def test_yaml_bare_off_and_on_are_understood(tmp_path: Path) -> None:
    text = yaml.safe_dump(config_with(defaults=None, roles=None))
    path = tmp_path / "config.yaml"
    path.write_text(
        text
        + "defaults:\n  retention: off\n  consent: off\n  legal_hold: on\n"
        + "roles:\n  staff_power_level: off\n"
    )
    config = load_config(path, env={})
    assert config.roles.staff_power_level is None
    assert config.defaults.retention_seconds is None
    assert config.defaults.consent == "off"
    assert config.defaults.legal_hold is True


def test_missing_required_keys_are_all_listed() -> None:
    problems = problems_of({})
    for key in (
        "homeserver.url",
        "bot.user_id",
        "bot.password",
        "encryption.pickle_key",
        "audit.hmac_key",
    ):
        assert any(p.startswith(f"{key}: missing") for p in problems), key
    assert any("bot.access_token" in p for p in problems if p.startswith("bot.password"))
    assert any("CHAPERONE_AUDIT_HMAC_KEY" in p for p in problems)


@pytest.mark.parametrize(
    "value",
    [
        "CHANGE_ME",
        "changeme",
        "change-me-please",
        "<your hmac key here>",
        "xxxxxxxxxxxxxxxxxxxx",
        "TODO: generate a key",
        "example-hmac-key-123",
        "none",
        "REPLACE_ME_0123456789",
    ],
)
@pytest.mark.parametrize(
    "key",
    [
        "encryption.pickle_key",
        "audit.hmac_key",
        "bot.password",
        "http.api_token",
        "homeserver.admin_token",
    ],
)
def test_placeholder_secrets_are_refused(key: str, value: str) -> None:
    section, name = key.split(".")
    problems = problems_of(config_with(**{f"{section}__{name}": value}))
    assert problems == [f"{key}: looks like a placeholder; expected a real value"]


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"homeserver__url": "https://<your-homeserver>"}, "homeserver.url"),
        ({"homeserver__url": "https://CHANGE_ME"}, "homeserver.url"),
        ({"bot__user_id": "@chaperone:CHANGE_ME"}, "bot.user_id"),
        ({"bot__user_id": "@xxx:clinic.test"}, "bot.user_id"),
        ({"retention__archive_public_key": "CHANGE_ME"}, "retention.archive_public_key"),
    ],
)
def test_placeholder_required_values_are_refused(changes: dict[str, Any], key: str) -> None:
    assert problems_of(config_with(**changes)) == [
        f"{key}: looks like a placeholder; expected a real value"
    ]


@pytest.mark.parametrize("key", ["encryption.pickle_key", "audit.hmac_key"])
def test_empty_required_secret_is_refused(key: str) -> None:
    section, name = key.split(".")
    problems = problems_of(config_with(**{f"{section}__{name}": "   "}))
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}: empty; expected ")


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_environment_overrides_the_file(key: str, tmp_path: Path) -> None:
    section, name = key.split(".")
    data = config_with(**{f"{section}__{name}": "file-value-that-loses-0123"})
    if key.startswith("database."):
        data["database"][name] = "postgresql://file@localhost/file"
    config = parse_config(data, {env_var(key): SECRET_SAMPLES[key]}, tmp_path)
    assert getattr(getattr(config, section), name) == SECRET_SAMPLES[key]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_file_named_by_environment_supplies_the_secret(key: str, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(f"  {SECRET_SAMPLES[key]}\n")
    section, name = key.split(".")
    config = parse_config(
        copy.deepcopy(VALID), {f"{env_var(key)}_FILE": str(secret_file)}, tmp_path
    )
    assert getattr(getattr(config, section), name) == SECRET_SAMPLES[key]


def test_environment_names_follow_the_section_and_key() -> None:
    assert env_var("bot.password") == "CHAPERONE_BOT_PASSWORD"
    assert env_var("audit.hmac_key") == "CHAPERONE_AUDIT_HMAC_KEY"
    assert env_var("homeserver.admin_token") == "CHAPERONE_HOMESERVER_ADMIN_TOKEN"


def test_environment_fills_a_key_missing_from_the_file(tmp_path: Path) -> None:
    data = config_with(audit__hmac_key=DELETE)
    config = parse_config(data, {"CHAPERONE_AUDIT_HMAC_KEY": "from-env-0123456789"}, tmp_path)
    assert config.audit.hmac_key == "from-env-0123456789"


def test_unreadable_secret_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    problems = problems_of(VALID, {"CHAPERONE_AUDIT_HMAC_KEY_FILE": str(missing)})
    assert len(problems) == 1
    assert problems[0].startswith("audit.hmac_key: CHAPERONE_AUDIT_HMAC_KEY_FILE names ")
    assert str(missing) in problems[0]


def test_secret_from_both_variable_and_file_is_a_problem(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("file-secret-0123456789")
    env = {
        "CHAPERONE_AUDIT_HMAC_KEY": "env-secret-0123456789",
        "CHAPERONE_AUDIT_HMAC_KEY_FILE": str(secret_file),
    }
    assert problems_of(VALID, env) == [
        "audit.hmac_key: both CHAPERONE_AUDIT_HMAC_KEY and CHAPERONE_AUDIT_HMAC_KEY_FILE are set;"
        " expected only one"
    ]


def test_placeholder_from_environment_is_refused_too() -> None:
    problems = problems_of(VALID, {"CHAPERONE_BOT_PASSWORD": "changeme"})
    assert problems == ["bot.password: looks like a placeholder; expected a real value"]


def test_no_secret_value_appears_in_any_problem(tmp_path: Path) -> None:
    leaky = {
        "bot.password": "CHANGE_ME-but-real-pass-987",
        "bot.access_token": "<tok-abc-999-zzz>",
        "encryption.pickle_key": 1234567890123,
        "audit.hmac_key": "s3cr3t-short",
        "database.url": "mysql://user:hunter2pass@db/x",
        "http.api_token": ["list-token-5555"],
        "homeserver.admin_token": "example-admin-token-777",
        "encryption.recovery_key": "TODO recovery-key-888",
    }
    data = config_with(homeserver__url="nope", bot__user_id="nobody", retention__method="purge")
    for key, value in leaky.items():
        section, name = key.split(".")
        data.setdefault(section, {})[name] = value
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    for key in leaky:
        assert key in message, key
    for value in leaky.values():
        for fragment in value if isinstance(value, list) else [value]:
            assert str(fragment) not in message
    assert "hunter2pass" not in message


def test_yaml_error_names_the_line_but_not_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('bot:\n  user_id: "@bot:clinic.test"\n  password: "unterminated-secret-xyz\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert len(caught.value.problems) == 1
    assert "not valid YAML at line" in str(caught.value)
    assert "unterminated-secret-xyz" not in str(caught.value)


def test_unquoted_bang_value_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("bot:\n  command_prefix: !chaperone\n")
    with pytest.raises(ConfigError, match=r"read as a YAML tag\); expected it in quotes"):
        load_config(path, env={})


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", env={})
    assert caught.value.problems == [
        f"{tmp_path / 'absent.yaml'}: no such file; expected a config file "
        "(copy config.example.yaml)"
    ]


@pytest.mark.parametrize("content", ["- a\n- list\n", "just text\n"])
def test_top_level_must_be_a_mapping(content: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems[0].startswith("(top level): got ")


def test_error_text_is_one_problem_per_line() -> None:
    error = ConfigError(["a.b: wrong; expected x", "c.d: wrong; expected y"])
    assert str(error) == "a.b: wrong; expected x\nc.d: wrong; expected y"
    assert error.problems == ["a.b: wrong; expected x", "c.d: wrong; expected y"]


@pytest.mark.parametrize(
    ("data_dir", "expected"),
    [
        ("state", "etc/chaperone/state"),
        ("./state", "etc/chaperone/state"),
        ("../var/chaperone", "etc/var/chaperone"),
        (DELETE, "etc/chaperone/data"),
    ],
)
def test_relative_data_dir_resolves_against_the_config_file(
    data_dir: Any, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "etc" / "chaperone", config_with(bot__data_dir=data_dir))
    config = load_config(path, env={})
    assert config.bot.data_dir == str(tmp_path / expected)
    assert config.recovery_key_path == tmp_path / expected / "recovery-key.txt"


def test_absolute_and_home_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    absolute = parse_config(config_with(bot__data_dir="/var/lib/chaperone"), {}, tmp_path)
    assert absolute.bot.data_dir == "/var/lib/chaperone"
    home = parse_config(config_with(bot__data_dir="~/chaperone"), {}, tmp_path)
    assert home.bot.data_dir == str(tmp_path / "home" / "chaperone")


def test_recovery_key_file_resolves_against_the_config_file(tmp_path: Path) -> None:
    data = config_with(encryption__recovery_key_file="keys/recovery.txt")
    config = load_config(write(tmp_path, data), env={})
    assert config.recovery_key_path == tmp_path / "keys" / "recovery.txt"


def test_secrets_stay_out_of_repr_and_are_listed_for_masking(tmp_path: Path) -> None:
    env = {env_var(key): value for key, value in SECRET_SAMPLES.items()}
    config = parse_config(copy.deepcopy(VALID), env, tmp_path)
    shown = repr(config)
    for value in SECRET_SAMPLES.values():
        assert value not in shown
        assert value in config.secret_values()
    assert "dbPassw0rd6p7q" in config.secret_values()
    assert "" not in config.secret_values()


def test_warnings_about_retention_without_an_archive(tmp_path: Path) -> None:
    config = parse_config(copy.deepcopy(VALID), {}, tmp_path)
    assert (
        "defaults.retention: on (30d) with no retention.archive_public_key; swept messages are "
        "destroyed with no archived copy"
    ) in check_warnings(config)
    key = "A" * 43 + "="  # 32 bytes in base64, the form chaperone keygen prints
    archived = parse_config(config_with(retention__archive_public_key=key), {}, tmp_path)
    assert not any("archive" in w for w in check_warnings(archived))


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"bot__dry_run": True}, "bot.dry_run"),
        ({"bot__admin_min_trust": "any"}, "bot.admin_min_trust"),
        ({"roles__admins": []}, "roles.admins"),
        ({"defaults__consent": "off"}, "defaults.consent"),
        ({"defaults__require_encryption": False}, "defaults.require_encryption"),
        ({"http__listen": "0.0.0.0:8080"}, "http.listen"),
        ({"bot__access_token": "syt_abc_def"}, "bot.password"),
    ],
)
def test_other_warnings(changes: dict[str, Any], key: str, tmp_path: Path) -> None:
    config = parse_config(config_with(**changes), {}, tmp_path)
    assert any(w.startswith(f"{key}: ") for w in check_warnings(config))
    plain = parse_config(copy.deepcopy(VALID), {}, tmp_path)
    assert not any(w.startswith(f"{key}: ") for w in check_warnings(plain))


def test_a_short_http_api_token_is_refused_without_quoting_it() -> None:
    """A guessable API token would open the audit export: 32 characters at least."""
    short = "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4"  # 31 characters
    problems = problems_of(VALID, {"CHAPERONE_HTTP_API_TOKEN": short})
    assert len(problems) == 1
    assert problems[0].startswith("http.api_token: ")
    assert problems[0].endswith("expected at least 32 characters (e.g. openssl rand -hex 32)")
    assert short not in problems[0]
    parse_config(VALID, {"CHAPERONE_HTTP_API_TOKEN": short + "3"}, Path("/srv/chaperone"))
