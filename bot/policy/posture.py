"""Room posture: what a clinic room's settings must be, as pure checks over plain state.

Each finding carries the state event that fixes it; whether the bot may send that event is
decided from the room's power levels (`plan_fixes`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mautrix.types import UserID

MEGOLM = "m.megolm.v1.aes-sha2"

ENCRYPTION = "m.room.encryption"
JOIN_RULES = "m.room.join_rules"
HISTORY_VISIBILITY = "m.room.history_visibility"
GUEST_ACCESS = "m.room.guest_access"
SERVER_ACL = "m.room.server_acl"
POWER_LEVELS = "m.room.power_levels"
CREATE = "m.room.create"
MEMBER = "m.room.member"

CHECKED_TYPES = frozenset({ENCRYPTION, JOIN_RULES, HISTORY_VISIBILITY, GUEST_ACCESS, SERVER_ACL})
"""State event types whose own content makes or clears a finding (`after_state_event`)."""

FULL_CHECK_TYPES = frozenset({POWER_LEVELS})
"""State event types whose effect needs the whole room (members, roles): a full check."""

GOOD_HISTORY = ("joined", "invited")
_GLOB_CHARS = frozenset("*?")


@dataclass(frozen=True)
class RoomState:
    """The contents of the state events posture looks at; None when the room has none."""

    encryption: Mapping[str, Any] | None = None
    join_rules: Mapping[str, Any] | None = None
    history_visibility: Mapping[str, Any] | None = None
    guest_access: Mapping[str, Any] | None = None
    server_acl: Mapping[str, Any] | None = None
    power_levels: Mapping[str, Any] | None = None
    create: Mapping[str, Any] | None = None
    creator: UserID = UserID("")
    """The sender of `m.room.create` ("": unknown)."""
    members: Mapping[UserID, str] = field(default_factory=dict)
    """User ID -> membership, from `m.room.member` events."""

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> RoomState:
        """From raw state events (type, state_key, content), e.g. a /state response."""
        state = cls()
        members: dict[UserID, str] = {}
        for evt in events:
            content, state_key, etype = evt.get("content"), evt.get("state_key"), evt.get("type")
            if not isinstance(content, Mapping):
                continue
            if etype == MEMBER and isinstance(state_key, str) and state_key.startswith("@"):
                membership = content.get("membership")
                members[UserID(state_key)] = membership if isinstance(membership, str) else "leave"
            elif etype == CREATE and state_key == "":
                sender = evt.get("sender")
                creator = UserID(sender if isinstance(sender, str) else "")
                state = replace(state, create=content, creator=creator)
            elif state_key == "":
                state = state.with_event(str(etype), content)
        return replace(state, members=members) if members else state

    def with_event(self, event_type: str, content: Mapping[str, Any]) -> RoomState:
        """This state after one state event (other types are ignored)."""
        field_name = _FIELDS.get(event_type)
        if field_name is None:
            return self
        if event_type == ENCRYPTION and not content:
            return replace(self, encryption=None)  # a redacted m.room.encryption is none
        changes: dict[str, Any] = {field_name: content}
        return replace(self, **changes)


_FIELDS = {
    ENCRYPTION: "encryption",
    JOIN_RULES: "join_rules",
    HISTORY_VISIBILITY: "history_visibility",
    GUEST_ACCESS: "guest_access",
    SERVER_ACL: "server_acl",
    POWER_LEVELS: "power_levels",
}


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a room, and the state event that would put it right."""

    code: str
    problem: str
    fix: str
    event_type: str
    content: Mapping[str, Any] = field(default_factory=dict)
    outrank: int | None = None
    """The bot must be above this level to apply the fix (Matrix lets no one lower a user
    whose level is not below their own)."""
    blocked: str = ""
    """Why no power level allows the fix (e.g. a creator of a v12 room cannot be demoted)."""


def server_of(user_id: UserID) -> str:
    """The server name part of a user ID (`@a:example.org:8448` → `example.org:8448`)."""
    return user_id.partition(":")[2]


def is_external(user_id: UserID, allowed_servers: Collection[str]) -> bool:
    """Whether a user comes from outside `roles.allowed_servers` (never, when it is unset)."""
    return bool(allowed_servers) and server_of(user_id) not in allowed_servers


def admitted_servers(allowed_servers: Collection[str], own_server: str) -> list[str]:
    """The servers a room's ACL should admit: the allowed ones plus the bot's own.

    Synapse refuses an ACL that shuts out its own server, and it could never be undone.
    """
    return sorted(set(allowed_servers) | {own_server})


def creators_outrank_power_levels(room_version: str) -> bool:
    """From room version 12 on, creators are above every power level (older rooms: not)."""
    return room_version.isdigit() and int(room_version) >= 12


def creators(state: RoomState) -> frozenset[UserID]:
    """The room's creators when they outrank every power level (room version 12 on), else
    none: in older rooms a creator's power is the level `m.room.power_levels` gives them."""
    create = state.create or {}
    version = create.get("room_version", "1")
    if not isinstance(version, str) or not creators_outrank_power_levels(version):
        return frozenset()
    extra = create.get("additional_creators")
    listed = [UserID(u) for u in extra if isinstance(u, str)] if isinstance(extra, list) else []
    return frozenset([state.creator, *listed]) - {""}


def _level(value: Any, default: int) -> int:
    # Rooms before version 10 may hold levels as strings; anything else is the default.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 20:
        return int(value)
    return default


def user_level(power_levels: Mapping[str, Any] | None, user_id: UserID) -> int:
    """The user's level from `m.room.power_levels` (creators aside)."""
    levels = power_levels or {}
    users = levels.get("users")
    default = _level(levels.get("users_default"), 0)
    if isinstance(users, Mapping) and user_id in users:
        return _level(users[user_id], default)
    return default


def power_threshold(power_levels: Mapping[str, Any]) -> int:
    """The lowest level that holds power over the room: redacting others, kicking, banning,
    changing state in general or any setting posture checks."""
    levels = [_level(power_levels.get(key), 50) for key in ("redact", "kick", "ban")]
    levels.append(_level(power_levels.get("state_default"), 50))
    events = power_levels.get("events")
    if isinstance(events, Mapping):
        for event_type in (*CODE_TYPES.values(), POWER_LEVELS):
            if event_type in events:
                levels.append(_level(events[event_type], 50))
    return min(levels)


def power_holders(
    state: RoomState, *, exclude: Collection[UserID] = ()
) -> dict[UserID, int | None]:
    """Members (joined or invited) who hold power over the room: user ID -> their level, or
    None for a creator of a v12 room. Without `m.room.power_levels` only creators count."""
    room_creators = creators(state)
    holders: dict[UserID, int | None] = {}
    for user_id, membership in sorted(state.members.items()):
        if membership not in ("join", "invite") or user_id in exclude:
            continue
        if user_id in room_creators:
            holders[user_id] = None
        elif state.power_levels is not None:
            level = user_level(state.power_levels, user_id)
            if level >= power_threshold(state.power_levels):
                holders[user_id] = level
    return holders


def patient_power_finding(
    state: RoomState, patients: Mapping[UserID, int | None]
) -> Finding | None:
    """`patient_power`: patients (user ID -> level, None for a creator) holding power over
    the room; the fix lowers them to 0 where a level can be lowered at all."""
    if not patients:
        return None
    described = [
        f"{u} (room creator)" if level is None else f"{u} (power {level})"
        for u, level in sorted(patients.items())
    ]
    content: dict[str, Any] = dict(state.power_levels or {})
    users = content.get("users")
    lowered = dict(users) if isinstance(users, Mapping) else {}
    lowered.update({u: 0 for u, level in patients.items() if level is not None})
    content["users"] = lowered
    levels = [level for level in patients.values() if level is not None]
    blocked = ""
    if len(levels) < len(patients):
        blocked = (
            "a creator of a version 12 room cannot be demoted: open a compliant room with "
            "`room new` and continue there"
        )
    return Finding(
        "patient_power",
        "patients hold power over the room: " + ", ".join(described),
        "lower their power level to 0",
        POWER_LEVELS,
        content,
        outrank=max(levels) if levels else None,
        blocked=blocked,
    )


def check_posture(
    state: RoomState,
    *,
    require_encryption: bool,
    allowed_servers: Collection[str],
    own_server: str,
    patients_with_power: Mapping[UserID, int | None] | None = None,
) -> list[Finding]:
    """Every way the room falls short of what a clinic needs, in a fixed order.

    `patients_with_power` (from `power_holders`, less staff and admins) is checked when
    given: who is a patient is not in the room state.
    """
    findings: list[Finding] = []
    if require_encryption and state.encryption is None:
        findings.append(
            Finding(
                "encryption",
                "the room is not encrypted",
                "turn on end-to-end encryption (it cannot be turned off again)",
                ENCRYPTION,
                {"algorithm": MEGOLM},
            )
        )
    join_rule = _text(state.join_rules, "join_rule", "invite")
    if join_rule == "public":
        findings.append(
            Finding(
                "join_rule",
                "anyone can join (join rule public)",
                "make the room invite-only",
                JOIN_RULES,
                {"join_rule": "invite"},
            )
        )
    history = _text(state.history_visibility, "history_visibility", "shared")
    if history not in GOOD_HISTORY:
        findings.append(
            Finding(
                "history_visibility",
                f"new members can read earlier messages (history visibility {history})",
                "show new members only what is sent after they joined",
                HISTORY_VISIBILITY,
                {"history_visibility": "joined"},
            )
        )
    guests = _text(state.guest_access, "guest_access", "forbidden")
    if guests != "forbidden":
        findings.append(
            Finding(
                "guest_access",
                f"guest accounts may join (guest access {guests})",
                "forbid guest access",
                GUEST_ACCESS,
                {"guest_access": "forbidden"},
            )
        )
    if allowed_servers:
        admitted = admitted_servers(allowed_servers, own_server)
        problem = _acl_problem(state.server_acl, admitted)
        if problem:
            findings.append(
                Finding(
                    "server_acl",
                    problem,
                    "set a server ACL admitting only " + ", ".join(admitted),
                    SERVER_ACL,
                    {"allow": admitted, "deny": [], "allow_ip_literals": False},
                )
            )
    if patients_with_power:
        finding = patient_power_finding(state, patients_with_power)
        if finding is not None:
            findings.append(finding)
    return findings


def _text(content: Mapping[str, Any] | None, key: str, default: str) -> str:
    value = (content or {}).get(key)
    return value if isinstance(value, str) else default


def _acl_problem(acl: Mapping[str, Any] | None, admitted: Sequence[str]) -> str | None:
    if acl is None:
        return "no server ACL: members from any server can join"
    allow = acl.get("allow")
    patterns = [p for p in allow if isinstance(p, str)] if isinstance(allow, list) else []
    extra = [p for p in patterns if p not in admitted or _GLOB_CHARS & set(p)]
    if extra:
        return "the server ACL admits servers outside the allowed list: " + ", ".join(extra)
    if acl.get("allow_ip_literals", True) is not False:
        return "the server ACL admits servers named by IP address"
    return None


@dataclass(frozen=True)
class FixPlan:
    """Whether the bot may apply one finding's fix; `needed` is the state event's level."""

    finding: Finding
    allowed: bool
    needed: int
    reason: str = ""
    """Why not, when more than the state event's level is missing."""


def required_level(power_levels: Mapping[str, Any] | None, event_type: str) -> int:
    """The power level needed to send a state event of `event_type` (Matrix defaults)."""
    if power_levels is None:
        return 0  # without m.room.power_levels, state_default is 0
    events = power_levels.get("events")
    if isinstance(events, Mapping) and isinstance(events.get(event_type), int):
        return int(events[event_type])
    default = power_levels.get("state_default", 50)
    return int(default) if isinstance(default, int) else 50


def plan_fixes(
    findings: Sequence[Finding], *, bot_level: int, power_levels: Mapping[str, Any] | None
) -> list[FixPlan]:
    """For each finding, whether the bot's power level suffices for its fix."""
    plans = []
    for finding in findings:
        needed = required_level(power_levels, finding.event_type)
        if finding.blocked:
            plans.append(FixPlan(finding, False, needed, finding.blocked))
        elif finding.outrank is not None and bot_level <= finding.outrank:
            reason = (
                f"the bot must have a higher power level than they do ({finding.outrank}; "
                f"the bot has {bot_level}) — or open a compliant room with `room new`"
            )
            plans.append(FixPlan(finding, False, needed, reason))
        else:
            plans.append(FixPlan(finding, bot_level >= needed, needed))
    return plans


def new_codes(previous: Collection[str], findings: Sequence[Finding]) -> list[str]:
    """Codes of findings that were not there at the last check: that is drift."""
    return [f.code for f in findings if f.code not in previous]


CODE_TYPES = {
    "encryption": ENCRYPTION,
    "join_rule": JOIN_RULES,
    "history_visibility": HISTORY_VISIBILITY,
    "guest_access": GUEST_ACCESS,
    "server_acl": SERVER_ACL,
    "patient_power": POWER_LEVELS,
}
"""Each finding's code and the one state event type it depends on."""


def after_state_event(
    previous: Collection[str],
    event_type: str,
    content: Mapping[str, Any],
    *,
    require_encryption: bool,
    allowed_servers: Collection[str],
    own_server: str,
) -> tuple[list[str], list[str]]:
    """One state event's effect on a room's findings: (new codes, all codes now).

    Judged from the event's own content, not the room's current state, so that a later event
    in the same batch is neither blamed on this one nor able to hide it.
    """
    findings = [
        f
        for f in check_posture(
            RoomState().with_event(event_type, content),
            require_encryption=require_encryption,
            allowed_servers=allowed_servers,
            own_server=own_server,
        )
        if f.event_type == event_type
    ]
    now = {c for c in previous if CODE_TYPES.get(c) != event_type} | {f.code for f in findings}
    ordered = [c for c in CODE_TYPES if c in now]
    return new_codes(previous, findings), ordered
