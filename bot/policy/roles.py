"""Who may do what: roles and device trust, decided over plain values."""

from __future__ import annotations

from collections.abc import Collection
from enum import IntEnum

from mautrix.types import UserID


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
    user_id: UserID,
    *,
    admins: Collection[UserID],
    staff: Collection[UserID],
    power_level: int = 0,
    staff_power_level: int | None = None,
) -> Role:
    """The role of `user_id` in a room: from who they are (config lists, stored staff).

    Room power counts only when `staff_power_level` is set: Element's direct chats give the
    invitee power 100 (room version <= 11) or make them a creator (version 12), so a patient
    would otherwise be staff in every DM a therapist opens.
    """
    if user_id in admins:
        return Role.ADMIN
    if user_id in staff:
        return Role.STAFF
    if staff_power_level is not None and power_level >= staff_power_level:
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
