from __future__ import annotations

import pytest
from mautrix.types import UserID

from bot.policy.posture import creators_outrank_power_levels
from bot.policy.roles import Role, role_of, trust_meets

ADMINS = {UserID("@admin:x")}
STAFF = {UserID("@staff:x")}


@pytest.mark.parametrize(
    ("user", "power", "staff_power_level", "expected"),
    [
        ("@admin:x", 0, None, Role.ADMIN),
        ("@staff:x", 0, None, Role.STAFF),
        # Off (the default): room power never makes anyone staff, not even a creator's.
        ("@mod:x", 50, None, Role.PATIENT),
        ("@dm-invitee:x", 100, None, Role.PATIENT),
        ("@v12-creator:x", 10**9, None, Role.PATIENT),
        # Set: enough power in the room makes one staff there.
        ("@mod:x", 50, 50, Role.STAFF),
        ("@someone:x", 49, 50, Role.PATIENT),
        ("@anyone:x", 0, 0, Role.STAFF),
        ("@staff:x", 0, 100, Role.STAFF),
        ("@admin:x", 100, 50, Role.ADMIN),
    ],
)
def test_role_of(user: UserID, power: int, staff_power_level: int | None, expected: Role) -> None:
    got = role_of(
        user,
        admins=ADMINS,
        staff=STAFF,
        power_level=power,
        staff_power_level=staff_power_level,
    )
    assert got == expected


def test_role_of_defaults_ignore_power() -> None:
    assert role_of(UserID("@x:x"), admins=ADMINS, staff=STAFF) == Role.PATIENT


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
