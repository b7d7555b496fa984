"""Room posture (SPEC 6): what a clinic room's settings must be, as pure checks over plain state.

Each finding carries the state event that fixes it; whether the bot may send that event is
decided from the room's power levels (`plan_fixes`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

MEGOLM = "m.megolm.v1.aes-sha2"

ENCRYPTION = "m.room.encryption"
JOIN_RULES = "m.room.join_rules"
HISTORY_VISIBILITY = "m.room.history_visibility"
GUEST_ACCESS = "m.room.guest_access"
SERVER_ACL = "m.room.server_acl"
POWER_LEVELS = "m.room.power_levels"

CHECKED_TYPES = frozenset({ENCRYPTION, JOIN_RULES, HISTORY_VISIBILITY, GUEST_ACCESS, SERVER_ACL})
"""State event types whose change can make or clear a finding."""

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

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> RoomState:
        """From raw state events (type, state_key, content), e.g. a /state response."""
        state = cls()
        for evt in events:
            if evt.get("state_key") == "" and isinstance(evt.get("content"), Mapping):
                state = state.with_event(str(evt.get("type")), evt["content"])
        return state

    def with_event(self, event_type: str, content: Mapping[str, Any]) -> RoomState:
        """This state after one state event (other types are ignored)."""
        field_name = _FIELDS.get(event_type)
        if field_name is None:
            return self
        if event_type == ENCRYPTION and not content:
            return replace(self, encryption=None)  # a redacted m.room.encryption is none
        return replace(self, **{field_name: content})


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


def server_of(user_id: str) -> str:
    """The server name part of a user ID (`@a:example.org:8448` → `example.org:8448`)."""
    return user_id.partition(":")[2]


def is_external(user_id: str, allowed_servers: Collection[str]) -> bool:
    """Whether a user comes from outside `roles.allowed_servers` (never, when it is unset)."""
    return bool(allowed_servers) and server_of(user_id) not in allowed_servers


def admitted_servers(allowed_servers: Collection[str], own_server: str) -> list[str]:
    """The servers a room's ACL should admit: the allowed ones plus the bot's own.

    Synapse refuses an ACL that shuts out its own server, and it could never be undone.
    """
    return sorted(set(allowed_servers) | {own_server})


def check_posture(
    state: RoomState,
    *,
    require_encryption: bool,
    allowed_servers: Collection[str],
    own_server: str,
) -> list[Finding]:
    """Every way the room falls short of what a clinic needs, in a fixed order."""
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
