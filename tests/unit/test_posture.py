"""Room posture checks, fix planning and alert wording: table-driven over plain values."""

from __future__ import annotations

from typing import Any

import pytest
from mautrix.types import RoomID, UserID

from bot.policy.alert_rules import alert_line, alert_message
from bot.policy.posture import (
    MEGOLM,
    RoomState,
    after_state_event,
    check_posture,
    creators,
    is_external,
    new_codes,
    plan_fixes,
    power_holders,
    power_threshold,
    required_level,
)
from bot.policy.room_new import matrix_to, plan_new_room, valid_room_name

GOOD: dict[str, Any] = {
    "encryption": {"algorithm": MEGOLM},
    "join_rules": {"join_rule": "invite"},
    "history_visibility": {"history_visibility": "joined"},
    "guest_access": {"guest_access": "forbidden"},
}
ACL_OK = {"allow": ["clinic.org", "localhost"], "deny": [], "allow_ip_literals": False}


def codes(
    state: RoomState, *, require_encryption: bool = True, allowed: tuple[str, ...] = ()
) -> list[str]:
    findings = check_posture(
        state,
        require_encryption=require_encryption,
        allowed_servers=allowed,
        own_server="localhost",
    )
    return [f.code for f in findings]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, []),
        ({"encryption": None}, ["encryption"]),
        ({"join_rules": {"join_rule": "public"}}, ["join_rule"]),
        ({"join_rules": {"join_rule": "knock"}}, []),
        ({"join_rules": {"join_rule": "restricted"}}, []),
        ({"join_rules": None}, []),  # no join rule event: invite
        ({"history_visibility": {"history_visibility": "shared"}}, ["history_visibility"]),
        ({"history_visibility": {"history_visibility": "world_readable"}}, ["history_visibility"]),
        ({"history_visibility": {"history_visibility": "invited"}}, []),
        ({"history_visibility": None}, ["history_visibility"]),  # absent means shared
        ({"guest_access": {"guest_access": "can_join"}}, ["guest_access"]),
        ({"guest_access": None}, []),  # absent means forbidden
        (
            {
                "encryption": None,
                "join_rules": {"join_rule": "public"},
                "history_visibility": {"history_visibility": "shared"},
            },
            ["encryption", "join_rule", "history_visibility"],
        ),
    ],
)
def test_each_setting_is_checked(change: dict[str, Any], expected: list[str]) -> None:
    assert codes(RoomState(**{**GOOD, **change})) == expected


def test_encryption_only_required_when_the_room_policy_says_so() -> None:
    state = RoomState(**{**GOOD, "encryption": None})
    assert codes(state, require_encryption=False) == []


@pytest.mark.parametrize(
    ("acl", "ok"),
    [
        (None, False),
        (ACL_OK, True),
        ({"allow": ["clinic.org"], "allow_ip_literals": False}, True),
        ({"allow": ["*"], "allow_ip_literals": False}, False),
        ({"allow": ["*.clinic.org"], "allow_ip_literals": False}, False),
        ({"allow": ["clinic.org", "evil.org"], "allow_ip_literals": False}, False),
        ({"allow": ["clinic.org"]}, False),  # IP literals are allowed unless refused
    ],
)
def test_server_acl_must_admit_only_allowed_servers(acl: Any, ok: bool) -> None:
    state = RoomState(**GOOD, server_acl=acl)
    assert codes(state, allowed=("clinic.org",)) == ([] if ok else ["server_acl"])
    assert codes(state) == []  # no allowed_servers: no ACL needed


def test_fix_contents_put_the_room_right() -> None:
    bad = RoomState(
        join_rules={"join_rule": "public"},
        history_visibility={"history_visibility": "shared"},
        guest_access={"guest_access": "can_join"},
    )
    findings = check_posture(
        bad, require_encryption=True, allowed_servers=("clinic.org",), own_server="localhost"
    )
    fixed_events = [
        {"type": f.event_type, "state_key": "", "content": dict(f.content)} for f in findings
    ]
    fixed = RoomState.from_events(fixed_events)
    assert codes(fixed, allowed=("clinic.org",)) == []
    acl = next(f for f in findings if f.code == "server_acl")
    assert acl.content["allow"] == ["clinic.org", "localhost"]  # never shuts out its own server


def test_from_events_ignores_other_state_keys_and_redacted_encryption() -> None:
    state = RoomState.from_events(
        [
            {"type": "m.room.encryption", "state_key": "", "content": {}},
            {"type": "m.room.join_rules", "state_key": "x", "content": {"join_rule": "public"}},
        ]
    )
    assert state.encryption is None and state.join_rules is None


@pytest.mark.parametrize(
    ("levels", "event_type", "needed"),
    [
        (None, "m.room.encryption", 0),
        ({}, "m.room.encryption", 50),
        ({"state_default": 75}, "m.room.join_rules", 75),
        ({"state_default": 50, "events": {"m.room.server_acl": 100}}, "m.room.server_acl", 100),
        ({"events": {"m.room.server_acl": 100}}, "m.room.join_rules", 50),
    ],
)
def test_required_level(levels: Any, event_type: str, needed: int) -> None:
    assert required_level(levels, event_type) == needed


def test_plan_fixes_by_power() -> None:
    state = RoomState(join_rules={"join_rule": "public"})
    findings = check_posture(
        state, require_encryption=True, allowed_servers=("c.org",), own_server="localhost"
    )
    levels = {"state_default": 50, "events": {"m.room.server_acl": 100}}
    plans = plan_fixes(findings, bot_level=50, power_levels=levels)
    allowed = {p.finding.code: (p.allowed, p.needed) for p in plans}
    assert allowed == {
        "encryption": (True, 50),
        "join_rule": (True, 50),
        "history_visibility": (True, 50),
        "server_acl": (False, 100),
    }


@pytest.mark.parametrize(
    ("user", "allowed", "external"),
    [
        ("@a:clinic.org", ("clinic.org",), False),
        ("@a:evil.org", ("clinic.org",), True),
        ("@a:clinic.org:8448", ("clinic.org",), True),  # a different server name
        ("@a:anything", (), False),  # not configured: nobody is external
    ],
)
def test_is_external(user: UserID, allowed: tuple[str, ...], external: bool) -> None:
    assert is_external(user, allowed) is external


def test_only_new_findings_are_drift() -> None:
    findings = check_posture(
        RoomState(join_rules={"join_rule": "public"}),
        require_encryption=True,
        allowed_servers=(),
        own_server="localhost",
    )
    assert new_codes(set(), findings) == ["encryption", "join_rule", "history_visibility"]
    assert new_codes({"encryption", "history_visibility"}, findings) == ["join_rule"]
    assert new_codes({"encryption", "join_rule", "history_visibility"}, findings) == []


@pytest.mark.parametrize(
    ("action", "details", "contains"),
    [
        ("posture.drift", {"new": ["join_rule"]}, "Posture drift in !r:s: join_rule"),
        (
            "posture.fixed",
            {"fixed": ["encryption"], "not_fixed_codes": ["server_acl"]},
            "server_acl",
        ),
        ("disclosure.external_member", {"server": "evil.org"}, "@x:evil.org from evil.org"),
        ("decryption.failed", {"reason": "withheld: m.unverified"}, "m.unverified"),
        ("policy.violation", {"kind": "no_consent"}, "(no_consent)"),
        ("command.executed", {"command": "status", "outcome": "error AB12"}, "reference AB12"),
    ],
)
def test_alert_lines(action: str, details: dict[str, Any], contains: str) -> None:
    line = alert_line(
        action, actor="@a:s", room_id="!r:s", event_id="$e", subject="@x:evil.org", details=details
    )
    assert line is not None and contains in line and "\n" not in line


@pytest.mark.parametrize(
    ("action", "details"),
    [("message.sent", {"hmac": "ab"}), ("command.executed", {"outcome": "ok"})],
)
def test_no_alert_for_ordinary_rows(action: str, details: dict[str, Any]) -> None:
    line = alert_line(
        action, actor="@a:s", room_id="!r", event_id="$e", subject=None, details=details
    )
    assert line is None


def test_alert_message_caps_a_burst() -> None:
    assert alert_message([]) is None
    text = alert_message([f"line {i}" for i in range(25)], limit=10)
    assert text is not None
    assert text.count("\n") == 10 and "15 more" in text


@pytest.mark.parametrize(
    ("previous", "event_type", "content", "new", "now"),
    [
        # A public join rule appears: drift; other findings are kept as they were.
        (
            ["encryption"],
            "m.room.join_rules",
            {"join_rule": "public"},
            ["join_rule"],
            ["encryption", "join_rule"],
        ),
        # Already known: no new drift.
        (["join_rule"], "m.room.join_rules", {"join_rule": "public"}, [], ["join_rule"]),
        # Put right: the finding goes, nothing new.
        (
            ["join_rule", "guest_access"],
            "m.room.join_rules",
            {"join_rule": "invite"},
            [],
            ["guest_access"],
        ),
        (["encryption"], "m.room.encryption", {"algorithm": MEGOLM}, [], []),
        (
            [],
            "m.room.guest_access",
            {"guest_access": "can_join"},
            ["guest_access"],
            ["guest_access"],
        ),
        ([], "m.room.history_visibility", {"history_visibility": "invited"}, [], []),
    ],
)
def test_after_state_event_judges_the_event_itself(
    previous: list[str], event_type: str, content: dict[str, Any], new: list[str], now: list[str]
) -> None:
    assert after_state_event(
        previous,
        event_type,
        content,
        require_encryption=True,
        allowed_servers=(),
        own_server="localhost",
    ) == (new, now)


# -- patient_power: a patient holding power over the room -------------------------------------

THERAPIST, PATIENT, BOT = UserID("@therapist:x"), UserID("@patient:x"), UserID("@bot:x")
NURSE, CLINIC_BOT = UserID("@nurse:x"), UserID("@bot:clinic.org")
V10_DM_LEVELS: dict[str, Any] = {
    "users": {THERAPIST: 100, PATIENT: 100},
    "users_default": 0,
    "events": {"m.room.power_levels": 100, "m.room.history_visibility": 100},
    "state_default": 50,
    "redact": 50,
    "kick": 50,
    "ban": 50,
}


def dm_state(version: str, *, patient: str = "invite") -> RoomState:
    """A direct chat as Element creates it (`trusted_private_chat`), the bot invited later."""
    create: dict[str, Any] = {"room_version": version}
    levels: dict[str, Any] = dict(V10_DM_LEVELS)
    if version == "12":
        create["additional_creators"] = [PATIENT]
        levels = {**levels, "users": {}}  # v12 creators are not listed
    events = [
        {"type": "m.room.create", "state_key": "", "sender": THERAPIST, "content": create},
        {"type": "m.room.power_levels", "state_key": "", "content": levels},
        {"type": "m.room.member", "state_key": THERAPIST, "content": {"membership": "join"}},
        {"type": "m.room.member", "state_key": PATIENT, "content": {"membership": patient}},
        {"type": "m.room.member", "state_key": BOT, "content": {"membership": "join"}},
    ]
    return RoomState.from_events(events)


@pytest.mark.parametrize(
    ("version", "expected"),
    [("10", {THERAPIST: 100, PATIENT: 100}), ("12", {THERAPIST: None, PATIENT: None})],
)
def test_power_holders_in_an_element_dm(version: str, expected: dict[str, Any]) -> None:
    assert power_holders(dm_state(version), exclude={BOT}) == expected


def test_members_who_left_hold_no_power_that_matters() -> None:
    assert power_holders(dm_state("10", patient="leave"), exclude={BOT}) == {THERAPIST: 100}


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ({}, 50),
        ({"redact": 0}, 0),  # anyone may redact others: any patient holds power
        ({"kick": 20, "ban": 30}, 20),
        ({"state_default": 10}, 10),
        ({"events": {"m.room.join_rules": 5, "m.room.topic": 0}}, 5),  # topic is harmless
        ({"redact": "25"}, 25),  # pre-v10 rooms may hold strings
        ({"redact": True, "kick": [1]}, 50),  # junk counts as the default
    ],
)
def test_power_threshold(levels: dict[str, Any], expected: int) -> None:
    assert power_threshold(levels) == expected


def test_users_default_counts_for_members_not_listed() -> None:
    state = RoomState(
        power_levels={"users_default": 50},
        members={PATIENT: "join"},
    )
    assert power_holders(state) == {PATIENT: 50}


def test_hostile_create_content_makes_no_creator() -> None:
    events = [
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": THERAPIST,
            "content": {"room_version": "12", "additional_creators": f"x{PATIENT}x"},
        },
        {"type": "m.room.member", "state_key": PATIENT, "content": {"membership": "join"}},
        {"type": "m.room.member", "state_key": "not-a-user", "content": {"membership": "join"}},
    ]
    state = RoomState.from_events(events)
    assert creators(state) == {THERAPIST}
    assert state.members == {PATIENT: "join"}


def patient_findings(state: RoomState, patients: dict[UserID, Any]) -> list[Any]:
    return check_posture(
        state,
        require_encryption=False,
        allowed_servers=(),
        own_server="x",
        patients_with_power=patients,
    )


def test_patient_with_level_100_can_be_lowered_only_by_a_higher_bot() -> None:
    state = dm_state("10")
    [finding] = [f for f in patient_findings(state, {PATIENT: 100}) if f.code == "patient_power"]
    assert "@patient:x (power 100)" in finding.problem
    assert finding.event_type == "m.room.power_levels"
    assert finding.content["users"] == {THERAPIST: 100, PATIENT: 0}
    assert finding.content["events"] == V10_DM_LEVELS["events"]  # the rest is kept
    [plan] = plan_fixes([finding], bot_level=100, power_levels=state.power_levels)
    assert not plan.allowed and "higher power level than they do (100" in plan.reason
    assert "room new" in plan.reason
    [plan] = plan_fixes([finding], bot_level=0, power_levels=state.power_levels)
    assert not plan.allowed
    # A moderator patient under a bot at 100 can be lowered.
    [finding] = [f for f in patient_findings(state, {PATIENT: 50}) if f.code == "patient_power"]
    [plan] = plan_fixes([finding], bot_level=100, power_levels=state.power_levels)
    assert plan.allowed and plan.needed == 100 and not plan.reason


def test_v12_creator_patient_cannot_be_demoted_use_room_new() -> None:
    state = dm_state("12")
    [finding] = [f for f in patient_findings(state, {PATIENT: None}) if f.code == "patient_power"]
    assert "@patient:x (room creator)" in finding.problem
    [plan] = plan_fixes([finding], bot_level=10**9, power_levels=state.power_levels)
    assert not plan.allowed
    assert "cannot be demoted" in plan.reason and "`room new`" in plan.reason


def test_no_patients_no_finding() -> None:
    assert "patient_power" not in [f.code for f in patient_findings(dm_state("12"), {})]
    # Without the patients given (a single state event judged alone), nothing is claimed.
    assert "patient_power" not in codes(dm_state("12"))


# -- room new: born compliant -------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10", "11", "12"])
@pytest.mark.parametrize("allowed", [(), ("clinic.org",)])
def test_a_new_room_passes_every_check(version: str, allowed: tuple[str, ...]) -> None:
    plan = plan_new_room(
        bot_user_id=CLINIC_BOT,
        patient=PATIENT,
        caller=THERAPIST,
        staff=[NURSE, THERAPIST, PATIENT, CLINIC_BOT],
        name="Sam",
        room_version=version,
        allowed_servers=allowed,
    )
    assert plan.invite == (PATIENT, THERAPIST, NURSE)
    users = plan.power_levels["users"]
    if version == "12":
        assert users == {THERAPIST: 50, NURSE: 50}  # the creator bot is never listed
    else:
        assert users == {THERAPIST: 50, NURSE: 50, CLINIC_BOT: 100}
    events = [
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": CLINIC_BOT,
            "content": {"room_version": version},
        },
        {"type": "m.room.power_levels", "state_key": "", "content": plan.power_levels},
        *plan.initial_state,
        *(
            {"type": "m.room.member", "state_key": u, "content": {"membership": "invite"}}
            for u in plan.invite
        ),
    ]
    state = RoomState.from_events(events)
    holders = power_holders(state, exclude={CLINIC_BOT})
    assert holders == {THERAPIST: 50, NURSE: 50}  # staff moderate; the patient holds none
    findings = check_posture(
        state,
        require_encryption=True,
        allowed_servers=allowed,
        own_server="clinic.org",
        patients_with_power={u: v for u, v in holders.items() if u == PATIENT},
    )
    assert findings == []
    # Staff cannot undo what posture checks.
    for event_type in ("m.room.join_rules", "m.room.history_visibility", "m.room.server_acl"):
        assert required_level(plan.power_levels, event_type) == 100


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("Therapy with Sam", True),
        ("n" * 255, True),
        ("n" * 256, False),
        ("", False),
        ("   ", False),
        ("line\nbreak", False),
        ("tab\there", False),
        ("del\x7f", False),
        ("c1\x85", False),
        ("lone\ud800", False),
        ("Ünïcødé 🙂 <b>&", True),  # allowed here; escaped wherever it is shown as HTML
    ],
)
def test_room_names(name: str, ok: bool) -> None:
    assert valid_room_name(name) is ok


def test_matrix_to_link() -> None:
    assert matrix_to(RoomID("!abc"), "clinic.org") == "https://matrix.to/#/!abc?via=clinic.org"
