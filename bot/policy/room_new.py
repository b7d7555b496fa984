"""Rooms born compliant (`room new`): the creation request for a room that passes every
posture check from its first event, decided over plain values."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from mautrix.types import RoomID, UserID

from bot.policy.posture import (
    ENCRYPTION,
    GUEST_ACCESS,
    HISTORY_VISIBILITY,
    JOIN_RULES,
    MEGOLM,
    POWER_LEVELS,
    SERVER_ACL,
    admitted_servers,
    creators_outrank_power_levels,
)

MAX_NAME_CHARS = 255
STAFF_LEVEL = 50
"""Staff moderate: redact, kick, ban, invite, change the room's name and topic."""
SETTINGS_LEVEL = 100
"""The settings posture checks: only the bot (a creator, or 100 before version 12)."""


@dataclass(frozen=True)
class NewRoom:
    """What `createRoom` is asked for; `invite` in order: the patient, the caller, more staff."""

    invite: tuple[UserID, ...]
    initial_state: tuple[dict[str, Any], ...]
    power_levels: dict[str, Any]
    name: str | None


def valid_room_name(name: str) -> bool:
    """At most 255 characters, not blank, no control characters (line breaks included)."""
    return (
        0 < len(name) <= MAX_NAME_CHARS
        and bool(name.strip())
        and not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name)
        and not any(0xD800 <= ord(c) < 0xE000 for c in name)  # lone surrogates
    )


def plan_new_room(
    *,
    bot_user_id: UserID,
    patient: UserID,
    caller: UserID,
    staff: Sequence[UserID] = (),
    name: str | None = None,
    room_version: str,
    allowed_servers: Collection[str] = (),
) -> NewRoom:
    """The request for a room that passes every posture check: encrypted, invite-only, history
    `joined`, guests forbidden, the server ACL when servers are restricted, staff at 50, the
    patient at 0 and only the bot above: a creator in version 12 (creators are not listed in
    `users`), level 100 before."""
    members = [caller, *staff]
    moderators = list(dict.fromkeys(u for u in members if u not in (patient, bot_user_id)))
    users: dict[UserID, int] = {user_id: STAFF_LEVEL for user_id in moderators}
    if not creators_outrank_power_levels(room_version):
        users[bot_user_id] = SETTINGS_LEVEL
    settings = (ENCRYPTION, JOIN_RULES, HISTORY_VISIBILITY, GUEST_ACCESS, SERVER_ACL)
    power_levels: dict[str, Any] = {
        "users": users,
        "users_default": 0,
        "events_default": 0,
        "state_default": STAFF_LEVEL,
        "invite": STAFF_LEVEL,
        "redact": STAFF_LEVEL,
        "kick": STAFF_LEVEL,
        "ban": STAFF_LEVEL,
        "events": {
            **{event_type: SETTINGS_LEVEL for event_type in settings},
            POWER_LEVELS: SETTINGS_LEVEL,
            "m.room.tombstone": SETTINGS_LEVEL,
            "m.room.name": STAFF_LEVEL,
            "m.room.topic": STAFF_LEVEL,
            "m.room.avatar": STAFF_LEVEL,
        },
    }
    state: list[dict[str, Any]] = [
        _state(ENCRYPTION, {"algorithm": MEGOLM}),
        _state(JOIN_RULES, {"join_rule": "invite"}),
        _state(HISTORY_VISIBILITY, {"history_visibility": "joined"}),
        _state(GUEST_ACCESS, {"guest_access": "forbidden"}),
    ]
    if allowed_servers:
        own_server = bot_user_id.partition(":")[2]
        admitted = admitted_servers(allowed_servers, own_server)
        state.append(
            _state(SERVER_ACL, {"allow": admitted, "deny": [], "allow_ip_literals": False})
        )
    return NewRoom(
        invite=(patient, *moderators),
        initial_state=tuple(state),
        power_levels=power_levels,
        name=name,
    )


def _state(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "state_key": "", "content": content}


def matrix_to(room_id: RoomID, via: str) -> str:
    """A matrix.to link that opens the room in Element (`via` helps a v12 room ID, which
    names no server, be found)."""
    return f"https://matrix.to/#/{room_id}?via={via}"
