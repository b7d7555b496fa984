"""Consent decisions: validity, violations of the consent rules, notices, renewal and expiry."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mautrix.types import EventID, RoomID, UserID

from bot.commands import consent as consent_commands
from bot.commands import policy as policy_commands
from bot.commands.registry import CommandRegistry, CommandSpec, CommandUsageError
from bot.policy.command_line import split_command
from bot.policy.consent import (
    OUTSIDE_HOURS,
    OVER_MAX_PER_DAY,
    PATIENT_WITHOUT_CONSENT,
    STAFF_WITHOUT_CONSENT,
    ConsentRecord,
    Enforcement,
    PatientState,
    Validity,
    Violation,
    after_hours_notice_due,
    contact_hours,
    enforcement_for,
    expires_at,
    expiry_due,
    notice_due,
    parse_max_per_day,
    parse_topics,
    patient_message_violation,
    reask_reason,
    staff_message_violations,
    terms_sha256,
    validity,
)
from bot.policy.hours import parse_hours

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York (EST)
NY = ZoneInfo("America/New_York")
ROOM = RoomID("!r:x")
P = UserID("@p:x")  # the patient
A, B, C, D = UserID("@a:x"), UserID("@b:x"), UserID("@c:x"), UserID("@d:x")


def record(**changes: object) -> ConsentRecord:
    base = ConsentRecord(
        id=1,
        room_id=ROOM,
        user_id=P,
        terms_version="1",
        terms_sha256=terms_sha256("terms"),
        source="message",
        event_id=EventID("$agree"),
        recorded_by=P,
        note=None,
        hours="Mon-Fri 09:00-17:00",
        timezone="America/New_York",
        topics=(),
        max_per_day=3,
        granted_at=T0 - timedelta(days=10),
        expires_at=T0 + timedelta(days=355),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_terms_hash_is_sha256_of_the_exact_text() -> None:
    assert (
        terms_sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert terms_sha256("abc ") != terms_sha256("abc")


@pytest.mark.parametrize(
    ("rec", "at", "version", "expected"),
    [
        (None, T0, "1", Validity.NONE),
        (record(), T0, "1", Validity.VALID),
        (
            record(revoked_at=T0 - timedelta(seconds=1), revoked_by=P),
            T0,
            "1",
            Validity.REVOKED,
        ),
        # A message sent before the revocation was made under valid consent.
        (record(revoked_at=T0 + timedelta(seconds=1), revoked_by=P), T0, "1", Validity.VALID),
        (record(expires_at=T0), T0, "1", Validity.EXPIRED),
        (record(expires_at=T0 + timedelta(seconds=1)), T0, "1", Validity.VALID),
        (record(), T0, "2", Validity.OUTDATED),
        (record(expires_at=T0 - timedelta(days=1)), T0, "2", Validity.EXPIRED),
    ],
)
def test_validity(
    rec: ConsentRecord | None, at: datetime, version: str, expected: Validity
) -> None:
    assert validity(rec, at, version) is expected


def test_expires_after_valid_days() -> None:
    assert expires_at(T0, 365) == T0 + timedelta(days=365)


@pytest.mark.parametrize(
    ("required", "state", "violation"),
    [
        (True, Validity.NONE, Violation(PATIENT_WITHOUT_CONSENT, (P,))),
        (True, Validity.REVOKED, Violation(PATIENT_WITHOUT_CONSENT, (P,))),
        (True, Validity.EXPIRED, Violation(PATIENT_WITHOUT_CONSENT, (P,))),
        (True, Validity.OUTDATED, Violation(PATIENT_WITHOUT_CONSENT, (P,))),
        (True, Validity.VALID, None),
        (False, Validity.NONE, None),
    ],
)
def test_patient_message_violation(
    required: bool, state: Validity, violation: Violation | None
) -> None:
    assert patient_message_violation(consent_required=required, sender=P, state=state) == violation


EVENING = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # Monday 18:00 in New York


@pytest.mark.parametrize(
    ("required", "patients", "at", "expected"),
    [
        ("required", [PatientState(P, record(), 0)], T0, []),
        ("off", [PatientState(P, None, 0)], T0, []),
        ("required", [], T0, []),
        ("required", [PatientState(P, None, 0)], T0, [(STAFF_WITHOUT_CONSENT, [P])]),
        (
            "required",
            [PatientState(P, record(revoked_at=T0, revoked_by=P), 0)],
            T0,
            [(STAFF_WITHOUT_CONSENT, [P])],
        ),
        ("required", [PatientState(P, record(), 0)], EVENING, [(OUTSIDE_HOURS, [P])]),
        ("required", [PatientState(P, record(), 2)], T0, []),
        ("required", [PatientState(P, record(), 3)], T0, [(OVER_MAX_PER_DAY, [P])]),
        (
            "required",
            [PatientState(P, record(), 5)],
            EVENING,
            [(OUTSIDE_HOURS, [P]), (OVER_MAX_PER_DAY, [P])],
        ),
        (
            "required",
            [
                PatientState(A, record(user_id=A), 0),
                PatientState(B, None, 0),
                PatientState(C, record(user_id=C, hours="daily 18:00-20:00"), 0),
                PatientState(D, record(user_id=D, timezone="Europe/Berlin"), 0),
            ],
            T0,  # 16:00 in Berlin: inside its Mon-Fri 09:00-17:00
            [(STAFF_WITHOUT_CONSENT, [B]), (OUTSIDE_HOURS, [C])],
        ),
    ],
)
def test_staff_message_violations(
    required: str,
    patients: list[PatientState],
    at: datetime,
    expected: list[tuple[str, list[str]]],
) -> None:
    got = staff_message_violations(
        consent_required=required == "required", patients=patients, at=at, terms_version="1"
    )
    assert [(v.kind, list(v.patients)) for v in got] == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("redact", Enforcement(redact=True, notice=True)),
        ("warn", Enforcement(redact=False, notice=True)),
        ("audit", Enforcement(redact=False, notice=False)),
    ],
)
def test_enforcement_modes(mode: str, expected: Enforcement) -> None:
    assert enforcement_for(mode) == expected


@pytest.mark.parametrize(
    ("last", "due"),
    [
        (None, True),
        (T0 - timedelta(minutes=9, seconds=59), False),
        (T0 - timedelta(minutes=10), True),
        (T0, False),
    ],
)
def test_violation_notice_at_most_every_ten_minutes(last: datetime | None, due: bool) -> None:
    assert notice_due(last, T0) is due


def test_contact_hours_are_the_patients_when_valid_else_the_defaults() -> None:
    mine = record(hours="daily 07:00-08:00", timezone="Asia/Tokyo")
    hours, tz = contact_hours(mine, Validity.VALID, "Mon-Fri 09:00-17:00", "America/New_York")
    assert (str(hours), tz.key) == ("daily 07:00-08:00", "Asia/Tokyo")
    hours, tz = contact_hours(mine, Validity.REVOKED, "Mon-Fri 09:00-17:00", "America/New_York")
    assert (str(hours), tz.key) == ("Mon-Fri 09:00-17:00", "America/New_York")


OFFICE = parse_hours("Mon-Fri 09:00-17:00")


@pytest.mark.parametrize(
    ("at", "last", "due"),
    [
        (T0, None, False),  # within hours: never
        (EVENING, None, True),
        (EVENING, EVENING - timedelta(minutes=30), False),  # same evening already answered
        (EVENING, datetime(2026, 3, 2, 21, 59, tzinfo=UTC), True),  # answered before 17:00
        # Tuesday 02:00 New York: same stretch as Monday evening.
        (datetime(2026, 3, 3, 7, 0, tzinfo=UTC), EVENING, False),
        # Tuesday evening: a new stretch.
        (datetime(2026, 3, 3, 23, 0, tzinfo=UTC), EVENING, True),
    ],
)
def test_after_hours_notice_once_per_stretch(
    at: datetime, last: datetime | None, due: bool
) -> None:
    assert after_hours_notice_due(OFFICE, NY, at, last) is due


@pytest.mark.parametrize(
    ("rec", "now", "version", "reason"),
    [
        (record(), T0, "1", None),
        (record(expires_at=T0 + timedelta(days=31)), T0, "1", None),
        (record(expires_at=T0 + timedelta(days=30)), T0, "1", "expiring"),
        (record(expires_at=T0 + timedelta(days=1)), T0, "1", "expiring"),
        (record(expires_at=T0 + timedelta(days=1), reasked_at=T0), T0, "1", None),
        (record(expires_at=T0), T0, "1", None),  # lapsed: expiry, not a renewal
        (record(revoked_at=T0, revoked_by=P), T0, "1", None),
        (record(), T0, "2", "new_terms"),
    ],
)
def test_reask(rec: ConsentRecord, now: datetime, version: str, reason: str | None) -> None:
    assert reask_reason(rec, now, version, valid_days=365) == reason


def test_reask_lead_is_a_tenth_of_a_short_validity() -> None:
    short = record(granted_at=T0, expires_at=T0 + timedelta(days=1))
    assert reask_reason(short, T0 + timedelta(hours=21), "1", valid_days=1) is None
    assert reask_reason(short, T0 + timedelta(hours=22), "1", valid_days=1) == "expiring"


@pytest.mark.parametrize(
    ("rec", "due"),
    [
        (record(expires_at=T0), True),
        (record(expires_at=T0 + timedelta(seconds=1)), False),
        (record(expires_at=T0, expiry_recorded_at=T0), False),
        (record(expires_at=T0, revoked_at=T0, revoked_by=P), False),
    ],
)
def test_expiry_due(rec: ConsentRecord, due: bool) -> None:
    assert expiry_due(rec, T0) is due


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("scheduling,billing", ("scheduling", "billing")),
        (" Scheduling , billing,scheduling ", ("scheduling", "billing")),
        ("check-ins", ("check-ins",)),
    ],
)
def test_topics(text: str, topics: tuple[str, ...]) -> None:
    assert parse_topics(text) == topics


@pytest.mark.parametrize("text", ["", " ", ",", "bad!topic", "x" * 41])
def test_topics_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a comma-separated list of topics"):
        parse_topics(text)


@pytest.mark.parametrize("text", ["-1", "0", "1001", "five", "", "1.5", "٣"])
def test_max_per_day_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a whole number from 1 to 1000"):
        parse_max_per_day(text)


@given(st.integers(1, 1000))
def test_max_per_day_accepts_its_range(n: int) -> None:
    assert parse_max_per_day(str(n)) == n


@given(st.integers(0, 20), st.integers(1, 20))
def test_the_message_over_the_limit_is_the_violation(sent: int, limit: int) -> None:
    rec = record(max_per_day=limit, hours="daily 00:00-24:00")
    got = staff_message_violations(
        consent_required=True, patients=[PatientState(P, rec, sent)], at=T0, terms_version="1"
    )
    assert bool(got) is (sent >= limit)


# -- command arguments (parsed before anything runs) ------------------------------------------


def consent_spec(name: str) -> CommandSpec[object]:
    return next(s for s in consent_commands.specs() if s.name == name)


def parse(spec: CommandSpec[object], text: str) -> dict[str, object]:
    line = split_command(text)
    match = CommandRegistry([spec]).match(line)
    assert match is not None
    return spec.parse_args(match[1], line.options)


def test_agree_takes_quoted_and_unquoted_hours() -> None:
    spec = consent_spec("consent agree")
    quoted = parse(spec, 'consent agree hours="Mon-Fri 09:00-12:00; Sat 10:00-12:00" tz=UTC')
    bare = parse(spec, "consent agree hours=Mon-Fri 09:00-12:00; Sat 10:00-12:00 tz=UTC")
    assert quoted == bare
    assert str(quoted["hours"]) == "Mon-Fri 09:00-12:00; Sat 10:00-12:00"
    assert parse(spec, "consent agree max_per_day=5 topics=billing") == {
        "max_per_day": 5,
        "topics": ("billing",),
    }


@pytest.mark.parametrize(
    ("text", "start"),
    [
        # Named and explained, never repeated: the reply goes back into the room.
        ("consent agree hours=Mon-Fri 25:00-17:00", "hours: not valid; expected hours like"),
        ("consent agree tz=Mars/Base", "tz: not valid; expected an IANA time zone"),
        ("consent agree max_per_day=-1", "max_per_day: not valid; expected a whole number"),
        ("consent agree topics=", "topics: not valid; expected a comma-separated list"),
        ("consent agree colour=blue", "an option is not known here; expected hours, tz"),
        ("consent record @p:x", "missing note=.."),
        ('consent record p note="x"', "user: not valid; expected a user ID like @name:server"),
        ('consent record @p:x note=" "', "note: not valid; expected a note"),
    ],
)
def test_bad_consent_arguments_are_one_line_naming_the_argument(text: str, start: str) -> None:
    spec = consent_spec(" ".join(text.split()[:2]))
    with pytest.raises(CommandUsageError) as caught:
        parse(spec, text)
    assert str(caught.value).startswith(start)
    assert "\n" not in str(caught.value)
    assert not {"25:00", "Mars", "-1", "colour", "'p'"} & set(str(caught.value).split())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("policy set retention 5x", "value: not valid for retention; expected off or a"),
        ("policy set retention 30m", "expected off or a duration of at least 1h"),
        ("policy set enforcement delete", "expected one of redact, warn, audit"),
        ("policy set colour blue", "field: not valid; expected one of consent, enforcement"),
        ("policy set consent", "missing <value>"),
    ],
)
def test_policy_set_values_are_checked_while_parsing(text: str, fragment: str) -> None:
    spec = next(s for s in policy_commands.specs(3600) if s.name == "policy set")
    with pytest.raises(CommandUsageError, match=re.escape(fragment)):
        parse(spec, text)
    assert parse(spec, "policy set retention 30d") == {"field": "retention", "value": "30d"}
    assert parse(spec, "policy set Legal_Hold on") == {"field": "legal_hold", "value": "on"}


FORBIDDEN = ("bot.matrix", "bot.db", "bot.service", "mautrix", "asyncpg", "asyncio")
ALLOWED = ("mautrix.types",)  # the ID types (RoomID, UserID, EventID): plain str at run time


@pytest.mark.parametrize("module", ["hours", "consent"])
def test_the_pure_core_imports_no_io(module: str) -> None:
    """bot/policy stays plain: no Matrix, database, service or asyncio, no reading the clock."""
    source = (Path(__file__).parents[2] / "bot" / "policy" / f"{module}.py").read_text()
    imported = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    assert not [n for n in imported if n.startswith(FORBIDDEN) and n not in ALLOWED]
    assert ".now(" not in source
