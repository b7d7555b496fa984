"""Recording consent: a patient agreeing in the room, staff recording a signed
form, a patient withdrawing. Each record is stored together with its audit row."""

from __future__ import annotations

from datetime import UTC
from functools import partial
from zoneinfo import ZoneInfo

from mautrix.types import EventID, RoomID, UserID

from bot.clock import Clock
from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.consent import ConsentRepo, NewConsent
from bot.db.unit_of_work import UnitOfWork
from bot.policy.consent import ConsentRecord, expires_at, terms_sha256
from bot.policy.hours import Hours, format_hours, parse_hours
from bot.policy.roles import Role
from bot.service.access import AccessService


class ConsentGrants:
    def __init__(
        self,
        config: Config,
        repo: ConsentRepo,
        audit: AuditLog,
        access: AccessService,
        clock: Clock,
    ) -> None:
        self.settings = config.consent
        self.repo = repo
        self.audit = audit
        self.access = access
        self.clock = clock
        self.bot_user_id = config.bot.user_id
        self.terms_hash = terms_sha256(self.settings.terms)

    def _new_consent(
        self,
        room_id: RoomID,
        patient: UserID,
        *,
        source: str,
        event_id: EventID,
        recorded_by: UserID,
        note: str | None,
        hours: Hours | None,
        tz: ZoneInfo | None,
        max_per_day: int | None,
        topics: tuple[str, ...] | None,
    ) -> NewConsent:
        s = self.settings
        now = self.clock.now()
        return NewConsent(
            room_id=room_id,
            user_id=patient,
            terms_version=s.version,
            terms_sha256=self.terms_hash,
            source=source,
            event_id=event_id,
            recorded_by=recorded_by,
            note=note,
            hours=format_hours(hours if hours is not None else parse_hours(s.default_hours)),
            timezone=str(tz.key) if tz is not None else s.default_timezone,
            topics=topics or (),
            max_per_day=max_per_day if max_per_day is not None else s.default_max_per_day,
            granted_at=now,
            expires_at=expires_at(now, s.valid_days),
        )

    async def grant(self, new: NewConsent, actor: UserID) -> ConsentRecord:
        """Store the consent and audit `consent.granted` together (once per command event).

        One unit of work, audit row first (bot/db/unit_of_work.py). The row names the
        consent's id, so the id is reserved from its sequence before anything is written (no
        row lock), and whether this event already granted a consent (a replayed command) is
        read under the audit lock: then nothing is recorded and the stored record returned.
        """
        stored: list[ConsentRecord] = []

        async def insert() -> None:
            stored.append((await self.repo.grant(new, consent_id))[0])

        async with UnitOfWork.locked(self.audit) as unit:
            existing = await self.repo.by_event(new.event_id)
            if existing is not None:
                return existing
            consent_id = await self.repo.next_id()
            unit.record(
                AuditEntry(
                    actor=actor,
                    action="consent.granted",
                    room_id=new.room_id,
                    event_id=new.event_id,
                    subject=new.user_id,
                    details={
                        "consent_id": consent_id,
                        "source": new.source,
                        "terms_version": new.terms_version,
                        "terms_sha256": new.terms_sha256,
                        "hours": new.hours,
                        "timezone": new.timezone,
                        "max_per_day": new.max_per_day,
                        "topics": list(new.topics),
                        "expires_at": new.expires_at.astimezone(UTC).isoformat(),
                    },
                )
            )
            unit.then(insert)
        return stored[0]

    async def agree(
        self,
        room_id: RoomID,
        patient: UserID,
        event_id: EventID,
        *,
        hours: Hours | None = None,
        tz: ZoneInfo | None = None,
        max_per_day: int | None = None,
        topics: tuple[str, ...] | None = None,
    ) -> ConsentRecord:
        new = self._new_consent(
            room_id,
            patient,
            source="message",
            event_id=event_id,
            recorded_by=patient,
            note=None,
            hours=hours,
            tz=tz,
            max_per_day=max_per_day,
            topics=topics,
        )
        return await self.grant(new, patient)

    async def record_offline(
        self,
        room_id: RoomID,
        staff: UserID,
        patient: UserID,
        event_id: EventID,
        note: str,
        *,
        hours: Hours | None = None,
        tz: ZoneInfo | None = None,
        max_per_day: int | None = None,
        topics: tuple[str, ...] | None = None,
    ) -> ConsentRecord:
        """A consent the patient gave on paper, recorded by staff with a note naming the form."""
        if patient == self.bot_user_id or await self.access.role(room_id, patient) != Role.PATIENT:
            raise ValueError(f"{patient} is not a patient here; consent is recorded for patients")
        new = self._new_consent(
            room_id,
            patient,
            source="offline",
            event_id=event_id,
            recorded_by=staff,
            note=note,
            hours=hours,
            tz=tz,
            max_per_day=max_per_day,
            topics=topics,
        )
        return await self.grant(new, staff)

    async def revoke(
        self, room_id: RoomID, patient: UserID, event_id: EventID
    ) -> ConsentRecord | None:
        """Withdraw the patient's consent at once; None when there was none to withdraw."""
        record = await self.repo.current(room_id, patient)
        if record is None or record.revoked_at is not None:
            return None
        now = self.clock.now()
        # Decided by a read under the audit lock (every revocation holds it), not by the
        # UPDATE's row count: the audit row goes first.
        async with UnitOfWork.locked(self.audit) as unit:
            latest = await self.repo.by_id(record.id)
            if latest is None or latest.revoked_at is not None:
                return None
            unit.record(
                AuditEntry(
                    actor=patient,
                    action="consent.revoked",
                    room_id=room_id,
                    event_id=event_id,
                    subject=patient,
                    details={"consent_id": record.id},
                )
            )
            unit.then(partial(self.repo.revoke, record.id, now, patient, event_id))
        return record
