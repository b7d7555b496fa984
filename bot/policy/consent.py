"""Consent decisions: validity, contact windows and frequency, violations, notices.

Plain values in, decisions out; `now` and message times are passed in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from mautrix.types import EventID, RoomID, UserID

from bot.policy.hours import Hours, is_within, off_hours_start, parse_hours, parse_timezone

# Violation kinds (no valid consent, outside contact hours, over the daily limit), the
# vocabulary of audit details and metric labels.
PATIENT_WITHOUT_CONSENT = "patient_without_consent"
STAFF_WITHOUT_CONSENT = "staff_without_patient_consent"
OUTSIDE_HOURS = "outside_contact_hours"
OVER_MAX_PER_DAY = "over_max_per_day"
KINDS = (PATIENT_WITHOUT_CONSENT, STAFF_WITHOUT_CONSENT, OUTSIDE_HOURS, OVER_MAX_PER_DAY)

NOTICE_INTERVAL = timedelta(minutes=10)
# Ask again this long before a consent lapses (at most a tenth of its whole validity).
REASK_BEFORE = timedelta(days=30)

_TOPIC = re.compile(r"[a-z0-9][a-z0-9 _-]{0,39}")
TOPICS_EXPECTED = "expected a comma-separated list of topics like scheduling,billing"


def terms_sha256(terms: str) -> str:
    """SHA-256 (hex) of the exact terms text (UTF-8): which words were agreed to."""
    return hashlib.sha256(terms.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ConsentRecord:
    """One stored consent, as evidence: who agreed to which terms, how, and what they allowed."""

    id: int
    room_id: RoomID
    user_id: UserID
    terms_version: str
    terms_sha256: str
    source: str  # "message" (the patient agreed in the room) or "offline" (staff recorded it)
    event_id: EventID | None  # the agreeing message, or the staff member's `consent record`
    recorded_by: UserID  # the patient, or the staff member who recorded a form
    note: str | None
    hours: str  # canonical text (format_hours)
    timezone: str
    topics: tuple[str, ...]  # empty: everything the terms describe
    max_per_day: int
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_by: UserID | None = None
    reasked_at: datetime | None = None
    expiry_recorded_at: datetime | None = None

    @property
    def parsed_hours(self) -> Hours:
        return parse_hours(self.hours)

    @property
    def zone(self) -> ZoneInfo:
        return parse_timezone(self.timezone)


class Validity(Enum):
    VALID = "valid"
    NONE = "none"
    REVOKED = "revoked"
    EXPIRED = "expired"
    OUTDATED = "terms changed"


def validity(record: ConsentRecord | None, at: datetime, terms_version: str) -> Validity:
    """Whether `record` (the latest one for a patient in a room) is in effect at `at`."""
    if record is None:
        return Validity.NONE
    if record.revoked_at is not None and record.revoked_at <= at:
        return Validity.REVOKED
    if at >= record.expires_at:
        return Validity.EXPIRED
    if record.terms_version != terms_version:
        return Validity.OUTDATED
    return Validity.VALID


def expires_at(granted_at: datetime, valid_days: int) -> datetime:
    return granted_at + timedelta(days=valid_days)


def reask_reason(
    record: ConsentRecord, now: datetime, terms_version: str, valid_days: int
) -> str | None:
    """Why the patient should be asked again now ("expiring" / "new_terms"), or None.

    Asked once per record: a new agreement makes a new record.
    """
    if record.reasked_at is not None or record.revoked_at is not None or now >= record.expires_at:
        return None
    if record.terms_version != terms_version:
        return "new_terms"
    lead = min(REASK_BEFORE, timedelta(days=valid_days) / 10)
    return "expiring" if now >= record.expires_at - lead else None


def expiry_due(record: ConsentRecord, now: datetime) -> bool:
    """The consent has lapsed and its expiry has not been recorded yet."""
    return (
        record.revoked_at is None
        and record.expiry_recorded_at is None
        and now >= record.expires_at
    )


# -- violations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientState:
    """What enforcement knows about one patient in the room when a staff member writes."""

    user_id: UserID
    record: ConsentRecord | None
    sent_today: int  # staff messages already counted on the patient's local day of the message


@dataclass(frozen=True)
class Violation:
    kind: str
    patients: tuple[UserID, ...]


def patient_message_violation(
    *, consent_required: bool, sender: UserID, state: Validity
) -> Violation | None:
    """The violation when a patient without valid consent writes in a `consent: required` room."""
    if consent_required and state is not Validity.VALID:
        return Violation(PATIENT_WITHOUT_CONSENT, (sender,))
    return None


def staff_message_violations(
    *,
    consent_required: bool,
    patients: Sequence[PatientState],
    at: datetime,
    terms_version: str,
) -> list[Violation]:
    """What a staff message at `at` violates, per patient: no valid consent, outside their contact
    hours, or over their daily limit. One Violation per kind, naming the patients.

    With `consent: off` the room is used without consent rules, so nothing is a violation.
    """
    if not consent_required:
        return []
    found: dict[str, list[UserID]] = {}
    for patient in patients:
        if validity(patient.record, at, terms_version) is not Validity.VALID:
            found.setdefault(STAFF_WITHOUT_CONSENT, []).append(patient.user_id)
            continue
        record = patient.record
        assert record is not None
        if not is_within(record.parsed_hours, at, record.zone):
            found.setdefault(OUTSIDE_HOURS, []).append(patient.user_id)
        if patient.sent_today >= record.max_per_day:
            found.setdefault(OVER_MAX_PER_DAY, []).append(patient.user_id)
    return [Violation(kind, tuple(found[kind])) for kind in KINDS if kind in found]


@dataclass(frozen=True)
class Enforcement:
    redact: bool
    notice: bool


def enforcement_for(mode: str) -> Enforcement:
    """What a violation triggers under the room's `enforcement` (audit always happens)."""
    return Enforcement(redact=mode == "redact", notice=mode in ("redact", "warn"))


def notice_due(last_sent: datetime | None, now: datetime) -> bool:
    """At most one violation notice per sender per room per NOTICE_INTERVAL."""
    return last_sent is None or now - last_sent >= NOTICE_INTERVAL


# -- after hours: a notice when a patient writes outside their contact hours ------------------


def contact_hours(
    record: ConsentRecord | None,
    state: Validity,
    default_hours: str,
    default_timezone: str,
) -> tuple[Hours, ZoneInfo]:
    """The hours a patient's conversation is looked after: theirs when they have valid consent,
    else the configured defaults."""
    if record is not None and state is Validity.VALID:
        return record.parsed_hours, record.zone
    return parse_hours(default_hours), parse_timezone(default_timezone)


def after_hours_notice_due(
    hours: Hours, tz: ZoneInfo, at: datetime, last_notice: datetime | None
) -> bool:
    """A patient writing at `at`: answer once per off-hours stretch (never within hours)."""
    stretch_start = off_hours_start(hours, at, tz)
    if stretch_start is None:
        return False
    return last_notice is None or last_notice < stretch_start


# -- argument values --------------------------------------------------------------------------


def parse_topics(text: str) -> tuple[str, ...]:
    """Topics like `scheduling,billing` (lower-cased, order kept, duplicates dropped)."""
    items = [t.strip().lower() for t in (text or "").split(",")]
    if not any(items):
        raise ValueError(f"no topics given; {TOPICS_EXPECTED}")
    topics: list[str] = []
    for item in items:
        if not item:
            continue
        if not _TOPIC.fullmatch(item):
            raise ValueError(
                f"'{item}' is not a topic (letters, digits, - or _); {TOPICS_EXPECTED}"
            )
        if item not in topics:
            topics.append(item)
    return tuple(topics)


def parse_max_per_day(text: str) -> int:
    value = (text or "").strip()
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 1000:
        raise ValueError(f"'{value}' is not allowed; expected a whole number from 1 to 1000")
    return int(value)
