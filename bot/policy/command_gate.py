"""Whether a command may run (sent encrypted where the room is, by a role that may run it, from
a trusted enough device for admin commands), as a pure decision."""

from __future__ import annotations

from dataclasses import dataclass

from bot.policy.roles import Role, trust_meets


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reason: str = ""


def gate_command(
    *,
    required: Role,
    caller: Role,
    room_encrypted: bool,
    event_encrypted: bool,
    trust: str,
    admin_min_trust: str,
) -> GateDecision:
    """Allow, or refuse with the one-line reason shown to the caller."""
    if room_encrypted and not event_encrypted:
        return GateDecision(
            False, "commands must be sent encrypted in an encrypted room; this one was not"
        )
    if caller < required:
        return GateDecision(False, f"this command needs the {required.label} role")
    if required >= Role.ADMIN and not trust_meets(trust, admin_min_trust):
        return GateDecision(
            False,
            f"admin commands need a device trust of at least {admin_min_trust}; "
            f"your device is {trust} — verify it (cross-sign it) and try again",
        )
    return GateDecision(True)
