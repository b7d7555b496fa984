"""Matrix events turned into plain facts the services decide over (no mautrix objects beyond)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mautrix.types import TrustState

_TRUST_NAMES = {
    TrustState.VERIFIED: "verified",
    TrustState.CROSS_SIGNED_TRUSTED: "cross-signed",
    TrustState.CROSS_SIGNED_TOFU: "cross-signed",
    TrustState.CROSS_SIGNED_UNTRUSTED: "any",
    TrustState.UNVERIFIED: "any",
}


def trust_name(state: TrustState | None) -> str:
    """`bot.admin_min_trust` vocabulary for a mautrix trust state."""
    if state is None:
        return "unknown"
    return _TRUST_NAMES.get(state, "unknown")


@dataclass(frozen=True)
class MessageFact:
    room_id: str
    event_id: str
    sender: str
    ts: int
    msgtype: str
    body: str = field(repr=False)  # never logged: repr hides it
    encrypted: bool
    trust: str


@dataclass(frozen=True)
class MembershipFact:
    room_id: str
    event_id: str
    sender: str
    target: str
    membership: str
    prev_membership: str | None
    reason: str | None


@dataclass(frozen=True)
class PowerLevelsFact:
    room_id: str
    event_id: str
    sender: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class RedactionFact:
    room_id: str
    event_id: str
    sender: str
    redacts: str | None


@dataclass(frozen=True)
class InviteFact:
    room_id: str
    event_id: str | None
    inviter: str
    encrypted: bool


Fact = MessageFact | MembershipFact | PowerLevelsFact | RedactionFact


def power_level_changes(content: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any]:
    """What changed between two `m.room.power_levels` contents: users and top-level levels."""
    changes: dict[str, Any] = {}
    users, prev_users = content.get("users", {}) or {}, prev.get("users", {}) or {}
    user_changes = {
        u: [prev_users.get(u), users.get(u)]
        for u in sorted(set(users) | set(prev_users))
        if users.get(u) != prev_users.get(u)
    }
    if user_changes:
        changes["users"] = user_changes
    for key in sorted((set(content) | set(prev)) - {"users"}):
        if content.get(key) != prev.get(key):
            changes[key] = [prev.get(key), content.get(key)]
    return changes


def facts_from_event(
    raw: dict[str, Any], *, trust: str = "unknown", encrypted: bool = False
) -> Fact | None:
    """A plain fact from a (decrypted) raw timeline event, or None when it is not audited."""
    etype = raw.get("type")
    room_id, event_id, sender = (
        raw.get("room_id", ""),
        raw.get("event_id", ""),
        raw.get("sender", ""),
    )
    content = raw.get("content") or {}
    if etype == "m.room.message":
        body = content.get("body")
        return MessageFact(
            room_id=room_id,
            event_id=event_id,
            sender=sender,
            ts=int(raw.get("origin_server_ts", 0)),
            msgtype=str(content.get("msgtype", "")),
            body=body if isinstance(body, str) else "",
            encrypted=encrypted,
            trust=trust,
        )
    if etype == "m.room.member" and "state_key" in raw:
        prev = (raw.get("unsigned") or {}).get("prev_content") or {}
        return MembershipFact(
            room_id=room_id,
            event_id=event_id,
            sender=sender,
            target=raw["state_key"],
            membership=str(content.get("membership", "")),
            prev_membership=prev.get("membership"),
            reason=content.get("reason") if isinstance(content.get("reason"), str) else None,
        )
    if etype == "m.room.power_levels" and raw.get("state_key") == "":
        prev = (raw.get("unsigned") or {}).get("prev_content") or {}
        return PowerLevelsFact(room_id, event_id, sender, power_level_changes(content, prev))
    if etype == "m.room.redaction":
        redacts = content.get("redacts") or raw.get("redacts")
        return RedactionFact(
            room_id, event_id, sender, redacts if isinstance(redacts, str) else None
        )
    return None
