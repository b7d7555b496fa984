"""Who may do what: roles and device trust, decided over plain values."""

from __future__ import annotations

from collections.abc import Collection
from enum import IntEnum


class Role(IntEnum):
    """Roles in increasing order of privilege; a higher role may do what a lower one may."""

    ANYONE = 0
    PATIENT = 1
    STAFF = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# Device trust levels in increasing order (names follow `bot.admin_min_trust`).
TRUST_ORDER = ("unknown", "any", "cross-signed", "verified")


def role_of(
    user_id: str,
    *,
    admins: Collection[str],
    staff: Collection[str],
    power_level: int,
    staff_power_level: int,
) -> Role:
    """The role of `user_id` in a room, from config lists, stored staff and room power."""
    if user_id in admins:
        return Role.ADMIN
    if user_id in staff or power_level >= staff_power_level:
        return Role.STAFF
    return Role.PATIENT


def trust_meets(trust: str, minimum: str) -> bool:
    """Whether a sender device's trust level satisfies `bot.admin_min_trust`."""
    if minimum == "any":
        return True
    try:
        return TRUST_ORDER.index(trust) >= TRUST_ORDER.index(minimum)
    except ValueError:
        return False
