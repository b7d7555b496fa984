from __future__ import annotations

import pytest

from bot.matrix.gateway import creators_outrank_power_levels
from bot.policy.roles import Role, role_of, trust_meets

ADMINS = {"@admin:x"}
STAFF = {"@staff:x"}


@pytest.mark.parametrize(
    ("user", "power", "expected"),
    [
        ("@admin:x", 0, Role.ADMIN),
        ("@staff:x", 0, Role.STAFF),
        ("@mod:x", 50, Role.STAFF),
        ("@someone:x", 49, Role.PATIENT),
    ],
)
def test_role_of(user: str, power: int, expected: Role) -> None:
    got = role_of(user, admins=ADMINS, staff=STAFF, power_level=power, staff_power_level=50)
    assert got == expected


@pytest.mark.parametrize(
    ("trust", "minimum", "ok"),
    [
        ("unknown", "any", True),
        ("any", "cross-signed", False),
        ("cross-signed", "cross-signed", True),
        ("cross-signed", "verified", False),
        ("verified", "cross-signed", True),
        ("unknown", "cross-signed", False),
    ],
)
def test_trust_meets(trust: str, minimum: str, ok: bool) -> None:
    assert trust_meets(trust, minimum) is ok


@pytest.mark.parametrize(
    ("version", "outrank"),
    [("12", True), ("13", True), ("11", False), ("10", False), ("org.example.custom", False)],
)
def test_only_v12_room_creators_outrank_power_levels(version: str, outrank: bool) -> None:
    assert creators_outrank_power_levels(version) is outrank
