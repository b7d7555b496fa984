"""Consent in the room, as a pipeline observer: terms when patients arrive, violations
(no valid consent, outside contact hours, over the daily limit) enforced by the room's mode,
and the notice to a patient who writes outside their contact hours."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime

from mautrix.types import RoomID

from bot.db.audit import AuditEntry
from bot.matrix.facts import MembershipFact, MessageFact
from bot.metrics import Metrics
from bot.policy.consent import (
    OUTSIDE_HOURS,
    OVER_MAX_PER_DAY,
    PATIENT_WITHOUT_CONSENT,
    PatientState,
    Violation,
    after_hours_notice_due,
    contact_hours,
    enforcement_for,
    notice_due,
    patient_message_violation,
    staff_message_violations,
)
from bot.policy.roles import Role
from bot.policy.room_policy import RoomPolicy
from bot.service.access import AccessService
from bot.service.consent import ConsentService
from bot.service.observers import BatchOutcome, Observer
from bot.service.outbox import EFFECT_EVENT_ID, queued_notice, queued_redaction
from bot.service.policy import PolicyService
from bot.service.ports import Notices

log = logging.getLogger("chaperone.consent")

# Redaction reasons are visible to every member: they name the rule, never the content.
REDACTION_REASONS = {
    PATIENT_WITHOUT_CONSENT: "Chaperone: sent before the patient agreed to the consent terms",
    OUTSIDE_HOURS: "Chaperone: sent outside the patient's agreed contact hours",
    OVER_MAX_PER_DAY: "Chaperone: over the patient's agreed number of messages a day",
}
STAFF_WITHOUT_CONSENT_REASON = "Chaperone: a patient in this room has not given consent"


class ConsentObserver(Observer):
    def __init__(
        self,
        consent: ConsentService,
        policy: PolicyService,
        access: AccessService,
        effects: Notices,
        metrics: Metrics,
    ) -> None:
        self.consent = consent
        self.policy = policy
        self.access = access
        self.effects = effects
        self.metrics = metrics
        self.bot_user_id = consent.bot_user_id
        self.prefix = consent.prefix

    async def read_ahead(self, room_ids: Collection[RoomID]) -> None:
        await self.policy.read_ahead(room_ids)

    # -- arrivals ----------------------------------------------------------------------------

    async def on_membership(self, fact: MembershipFact, outcome: BatchOutcome) -> None:
        if fact.membership != "join" or fact.prev_membership == "join":
            return
        if (await self.policy.get(fact.room_id)).consent != "required":
            return
        if fact.target == self.bot_user_id:
            patients, reason = await self.consent.patients_in(fact.room_id), "bot_joined"
        elif await self.access.role(fact.room_id, fact.target) == Role.PATIENT:
            patients, reason = [fact.target], "patient_joined"
        else:
            return
        await self.consent.ask(fact.room_id, patients, reason, outcome)

    # -- messages ----------------------------------------------------------------------------

    async def on_message(self, fact: MessageFact, outcome: BatchOutcome) -> None:
        at = (
            datetime.fromtimestamp(fact.ts / 1000, UTC)
            if fact.ts > 0
            else self.consent.clock.now()
        )
        policy = await self.policy.get(fact.room_id)
        if await self.access.role(fact.room_id, fact.sender) == Role.PATIENT:
            await self._patient_message(fact, at, policy, outcome)
        else:
            await self._staff_message(fact, at, policy, outcome)

    async def _patient_message(
        self, fact: MessageFact, at: datetime, policy: RoomPolicy, outcome: BatchOutcome
    ) -> None:
        record, state = await self.consent.state_of(fact.room_id, fact.sender, at)
        violation = patient_message_violation(
            consent_required=policy.consent == "required", sender=fact.sender, state=state
        )
        if violation is not None:
            await self._enforce(fact, at, policy, [violation], outcome)
            return
        s = self.consent.settings
        hours, tz = contact_hours(record, state, s.default_hours, s.default_timezone)
        last = await self.consent.last_notice(fact.room_id, fact.sender, "after_hours")
        if not after_hours_notice_due(hours, tz, at, last):
            return
        notice = queued_notice(
            fact.room_id,
            f"{fact.sender}: {s.after_hours_notice}",
            cause=f"after_hours:{fact.event_id}",
            mentions=[fact.sender],
            on_done=[
                AuditEntry(
                    actor=self.bot_user_id,
                    action="notice.after_hours",
                    room_id=fact.room_id,
                    event_id=fact.event_id,
                    subject=fact.sender,
                    details={"hours": str(hours), "timezone": tz.key},
                )
            ],
        )
        outcome.effects.append(notice)
        outcome.writes.append(self.consent.noted(fact.room_id, fact.sender, "after_hours", at))

    async def _staff_message(
        self, fact: MessageFact, at: datetime, policy: RoomPolicy, outcome: BatchOutcome
    ) -> None:
        patients = await self.consent.patients_in(fact.room_id)
        if not patients:
            return
        states = []
        for patient in patients:
            record, state = await self.consent.state_of(fact.room_id, patient, at)
            tz = record.zone if record is not None else self.consent.default_zone()
            sent = await self.consent.sent_today(fact.room_id, patient, at, tz, fact.event_id)
            states.append(PatientState(patient, record, sent))
        violations = staff_message_violations(
            consent_required=policy.consent == "required",
            patients=states,
            at=at,
            terms_version=self.consent.settings.version,
        )
        redacted = False
        if violations:
            redacted = await self._enforce(fact, at, policy, violations, outcome)
        if not redacted:  # the message reached the patients: it counts against max_per_day
            for patient in patients:
                outcome.writes.append(
                    self.consent.count_contact(
                        fact.room_id, patient, fact.event_id, fact.sender, at
                    )
                )

    # -- enforcement -------------------------------------------------------------------------

    async def _enforce(
        self,
        fact: MessageFact,
        at: datetime,
        policy: RoomPolicy,
        violations: list[Violation],
        outcome: BatchOutcome,
    ) -> bool:
        """Redact / tell / audit by the room's mode; True if the message is gone."""
        mode = enforcement_for(policy.enforcement)
        kind = violations[0].kind
        patients = sorted({p for v in violations for p in v.patients})
        details: dict[str, object] = {
            "kind": kind,
            "kinds": [v.kind for v in violations],
            "patients": patients,
            "enforcement": policy.enforcement,
        }
        self.metrics.violations.labels(kind=kind).inc()
        # The redaction waits in the outbox and is tried until it is done (a 429 never drops
        # it); a final refusal reaches the operator from there.
        redacted = mode.redact and not self.effects.dry_run
        if mode.redact:
            details["redacted"] = redacted
            if redacted:
                self.metrics.redactions.labels(cause="consent").inc()
                outcome.effects.append(
                    queued_redaction(
                        fact.room_id,
                        fact.event_id,
                        REDACTION_REASONS.get(kind, STAFF_WITHOUT_CONSENT_REASON),
                        # Keyed by the redaction event: when it syncs back, the pipeline
                        # recognises its own message.redacted row for it as this one.
                        on_done=[
                            AuditEntry(
                                actor=self.bot_user_id,
                                action="message.redacted",
                                room_id=fact.room_id,
                                event_id=EFFECT_EVENT_ID,
                                subject=fact.sender,
                                details={"redacts": fact.event_id, "cause": "policy.violation"},
                            )
                        ],
                    )
                )
            else:
                details["dry_run"] = True
        outcome.entries.append(
            AuditEntry(
                actor=fact.sender,
                action="policy.violation",
                room_id=fact.room_id,
                event_id=fact.event_id,
                subject=patients[0] if len(patients) == 1 else None,
                details=details,
            )
        )
        if mode.notice:
            last = await self.consent.last_notice(fact.room_id, fact.sender, "violation")
            if notice_due(last, at):
                outcome.effects.append(
                    queued_notice(
                        fact.room_id,
                        self._notice_text(fact, violations, redacted),
                        cause=f"violation:{fact.event_id}",
                        mentions=[fact.sender],
                    )
                )
                outcome.writes.append(
                    self.consent.noted(fact.room_id, fact.sender, "violation", at)
                )
        return redacted

    def _notice_text(self, fact: MessageFact, violations: list[Violation], redacted: bool) -> str:
        head = "your message was removed" if redacted else "please note"
        reasons = []
        for v in violations:
            names = ", ".join(v.patients)
            if v.kind == PATIENT_WITHOUT_CONSENT:
                reasons.append(
                    "you have not agreed to texting here yet. Send "
                    f"`{self.prefix} consent` to read the terms and "
                    f"`{self.prefix} consent agree` to agree"
                )
            elif v.kind == OUTSIDE_HOURS:
                reasons.append(f"it is outside the contact hours agreed by {names}")
            elif v.kind == OVER_MAX_PER_DAY:
                reasons.append(f"today's agreed number of messages for {names} is used up")
            else:
                reasons.append(f"{names} has not given (valid) consent to texting here")
        tail = (
            ""
            if violations[0].kind == PATIENT_WITHOUT_CONSENT
            else f" (`{self.prefix} consent list` shows what each patient agreed to)"
        )
        return f"{fact.sender}: {head}: " + "; ".join(reasons) + "." + tail
