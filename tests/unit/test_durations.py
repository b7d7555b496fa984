"""Duration parsing and formatting: the table of forms, the refusals, and the round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import ConfigError, parse_config
from bot.policy.durations import (
    MAX_SECONDS,
    UNITS,
    DurationTooLong,
    format_duration,
    format_retention,
    parse_duration,
    parse_retention,
)
from bot.policy.room_policy import parse_policy_value


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("90m", 90 * 60),
        ("12h", 12 * 3600),
        ("30d", 30 * 86400),
        ("6w", 6 * 7 * 86400),
        ("1y", 365 * 86400),
        ("1s", 1),
        ("007m", 7 * 60),
        (" 7d ", 7 * 86400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "5x",
        "0m",
        "0s",
        "-5m",
        "+5m",
        "1.5h",
        "m",
        "10",
        "1M",
        "1H",
        "1 h",
        "1h30m",
        "h1",
        "１h",
        "5m\n5m",
        "off",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "expected a number followed by s, m, h, d, w or y" in message
    assert "\n" not in message


def test_parse_duration_error_names_value_and_form() -> None:
    with pytest.raises(ValueError, match="'5x' is not a duration: expected a number followed by"):
        parse_duration("5x")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45, "45s"),
        (60, "1m"),
        (90 * 60, "90m"),
        (3600, "1h"),
        (36 * 3600, "36h"),
        (86400, "1d"),
        (8 * 86400, "8d"),
        (7 * 86400, "1w"),
        (365 * 86400, "1y"),
        (366 * 86400, "366d"),
        (730 * 86400, "2y"),
        (61, "61s"),
    ],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, -1, -3600])
def test_format_duration_refuses_non_positive(seconds: int) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("off", None), ("Off", None), (" off ", None), ("30d", 30 * 86400), ("1s", 1)],
)
def test_parse_retention(text: str, expected: int | None) -> None:
    assert parse_retention(text) == expected


@pytest.mark.parametrize("text", ["5x", "0d", "", "none", "never"])
def test_parse_retention_refuses_and_mentions_off(text: str) -> None:
    with pytest.raises(ValueError, match="expected off or a number"):
        parse_retention(text)


@pytest.mark.parametrize("seconds", [None, 1, 3600, 30 * 86400])
def test_format_retention_round_trips(seconds: int | None) -> None:
    assert parse_retention(format_retention(seconds)) == seconds


@given(st.integers(min_value=1, max_value=MAX_SECONDS))
def test_format_then_parse_is_identity(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(sorted(UNITS)))
def test_parse_then_format_keeps_the_length(amount: int, unit: str) -> None:
    if amount * UNITS[unit] > MAX_SECONDS:
        with pytest.raises(DurationTooLong):
            parse_duration(f"{amount}{unit}")
        return
    seconds = parse_duration(f"{amount}{unit}")
    assert seconds == amount * UNITS[unit]
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=10**12))
def test_format_uses_the_largest_exact_unit(seconds: int) -> None:
    text = format_duration(seconds)
    amount, unit = int(text[:-1]), text[-1]
    larger = [size for size in UNITS.values() if size > UNITS[unit]]
    assert amount * UNITS[unit] == seconds
    assert all(seconds % size != 0 for size in larger)


# Matrix's canonical JSON integers stop at 2^53-1: `m.room.retention` carries milliseconds.
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("285616y", 285616 * 365 * 86400), (f"{MAX_SECONDS}s", MAX_SECONDS), ("0001s", 1)],
)
def test_longest_durations_fit_canonical_json(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert seconds * 1000 <= 2**53 - 1


@pytest.mark.parametrize(
    "text",
    ["99999999999y", "285617y", f"{MAX_SECONDS + 1}s", "9" * 5000 + "s", "1" + "0" * 30 + "w"],
)
def test_durations_past_canonical_json_are_refused_in_one_line(text: str) -> None:
    for parse in (parse_duration, parse_retention):
        with pytest.raises(DurationTooLong) as caught:
            parse(text)
        message = str(caught.value)
        assert "too long" in message and "285616y" in message
        assert "\n" not in message and len(message) < 200


def test_policy_set_retention_past_canonical_json_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        parse_policy_value("retention", "99999999999y", retention_minimum=3600)
    message = str(caught.value)
    assert message == (
        "retention: '99999999999y' is too long: Matrix cannot represent more than 285616y "
        "(2^53-1 milliseconds); expected a shorter duration, or off"
    )


@pytest.mark.parametrize("key", ["defaults", "retention"])
def test_config_durations_past_canonical_json_are_refused(key: str) -> None:
    data: dict[str, dict[str, Any]] = {
        "homeserver": {"url": "https://matrix.clinic.test"},
        "bot": {"user_id": "@chaperone:clinic.test", "password": "correct-horse-battery"},
        "encryption": {"pickle_key": "pickle-key-0123456789"},
        "audit": {"hmac_key": "hmac-key-0123456789abcdef"},
        "roles": {"admins": ["@admin:clinic.test"]},
        "defaults": {"retention": "30d"},
        "retention": {"minimum": "1h"},
    }
    field = "retention" if key == "defaults" else "minimum"
    data[key][field] = "99999999999y"
    with pytest.raises(ConfigError) as caught:
        parse_config(data, {}, Path("/srv/chaperone"))
    problems = [p for p in caught.value.problems if "too long" in p]
    assert len(problems) == 1 and problems[0].startswith(f"{key}.{field}: "), problems
