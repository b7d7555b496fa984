from __future__ import annotations

import pytest

from bot.policy.room_policy import FIELDS, RoomPolicy, parse_policy_value


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("consent", "Required", "required"),
        ("consent", "off", "off"),
        ("enforcement", "warn", "warn"),
        ("retention", "30d", 30 * 86400),
        ("retention", "off", None),
        ("legal_hold", "on", True),
        ("require_encryption", "OFF", False),
    ],
)
def test_valid_values(field: str, text: str, expected: object) -> None:
    assert parse_policy_value(field, text, retention_minimum=3600) == expected


@pytest.mark.parametrize(
    ("field", "text", "names"),
    [
        ("consent", "maybe", "required, off"),
        ("enforcement", "shout", "redact, warn, audit"),
        ("retention", "5s", "minimum (1h)"),
        ("retention", "5x", "retention"),
        ("legal_hold", "yes", "on or off"),
        ("colour", "blue", "consent, enforcement"),
    ],
)
def test_bad_values_name_what_is_expected(field: str, text: str, names: str) -> None:
    with pytest.raises(ValueError, match="expected") as e:
        parse_policy_value(field, text, retention_minimum=3600)
    assert names in str(e.value) and "\n" not in str(e.value)


def test_value_text_round_trips() -> None:
    policy = RoomPolicy().with_value("retention", 7 * 86400).with_value("legal_hold", True)
    assert policy.value_text("retention") == "1w"
    assert policy.value_text("legal_hold") == "on"
    assert "retention: 1w" in policy.describe()


@pytest.mark.parametrize("field", FIELDS)
def test_every_default_is_shown_as_policy_set_takes_it(field: str) -> None:
    default = RoomPolicy()
    text = default.value_text(field)
    assert parse_policy_value(field, text, retention_minimum=3600) == default.get(field)
    assert f"{field}: {text}" in default.describe()


def test_fields_keep_their_public_names_and_order() -> None:
    assert FIELDS == ("consent", "enforcement", "retention", "legal_hold", "require_encryption")
    assert RoomPolicy().with_value("retention", 60).retention_seconds == 60
