"""Matrix events turned into plain facts the services decide over (no mautrix objects beyond)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mautrix.types import EventID, RoomID, TrustState, UserID

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
    """A message-like event: the consent rules judge who sent it and when."""

    room_id: RoomID
    event_id: EventID
    sender: UserID
    ts: int
    msgtype: str
    body: str = field(repr=False)  # never logged: repr hides it
    encrypted: bool
    trust: str
    event_type: str = "m.room.message"
    readable: bool = True
    """False for an encrypted event the bot could not decrypt (its body is unknown)."""


@dataclass(frozen=True)
class MembershipFact:
    room_id: RoomID
    event_id: EventID
    sender: UserID
    target: UserID
    membership: str
    prev_membership: str | None
    reason: str | None


@dataclass(frozen=True)
class PowerLevelsFact:
    room_id: RoomID
    event_id: EventID
    sender: UserID
    changes: dict[str, Any]


@dataclass(frozen=True)
class RedactionFact:
    room_id: RoomID
    event_id: EventID
    sender: UserID
    redacts: EventID | None


Fact = MessageFact | MembershipFact | PowerLevelsFact | RedactionFact

# What people send to each other, which the consent rules judge: messages of any msgtype
# (files and images included), stickers, poll starts (stable and unstable names).
MESSAGE_LIKE_TYPES = frozenset(
    {"m.room.message", "m.sticker", "m.poll.start", "org.matrix.msc3381.poll.start"}
)
# Extensible events (polls) carry their text here instead of `body`.
EXTENSIBLE_TEXT = "org.matrix.msc1767.text"
MSGTYPE_KEPT = 100  # a msgtype is a short name; anything longer is cut before it is audited


def _first_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("body"), str):
                return str(item["body"])
    return ""


def undecryptable_message(raw: dict[str, Any]) -> MessageFact:
    """An encrypted event the bot cannot read, as a message: the rules still judge its sender
    and time."""
    ts = raw.get("origin_server_ts")
    return MessageFact(
        room_id=RoomID(str(raw.get("room_id", ""))),
        event_id=EventID(str(raw.get("event_id", ""))),
        sender=UserID(str(raw.get("sender", ""))),
        ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else 0,
        msgtype="",
        body="",
        encrypted=True,
        trust="unknown",
        event_type="m.room.encrypted",
        readable=False,
    )


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
    content = raw.get("content")
    if not isinstance(content, dict):
        content = {}
    if etype in MESSAGE_LIKE_TYPES and "state_key" not in raw:
        body = content.get("body")
        if not isinstance(body, str):
            body = _first_text(content.get(EXTENSIBLE_TEXT))
        msgtype = content.get("msgtype") if etype == "m.room.message" else etype
        ts = raw.get("origin_server_ts")
        return MessageFact(
            room_id=room_id,
            event_id=event_id,
            sender=sender,
            ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else 0,
            msgtype=msgtype[:MSGTYPE_KEPT] if isinstance(msgtype, str) else "",
            body=body,
            encrypted=encrypted,
            trust=trust,
            event_type=str(etype),
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
            room_id, event_id, sender, EventID(redacts) if isinstance(redacts, str) else None
        )
    return None
