"""Consent renewal and expiry: a periodic check that asks patients again before
their consent lapses (or when the terms changed) and records `consent.expired`."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial

from bot.db.audit import AuditEntry
from bot.db.unit_of_work import UnitOfWork
from bot.policy.consent import ConsentRecord, Validity, expiry_due, reask_reason, validity
from bot.service.background import Backoff, Outage, run_forever
from bot.service.consent import ConsentService, day_text
from bot.service.failures import error_reference

log = logging.getLogger("chaperone.consent")

DEFAULT_CHECK_INTERVAL = 3600.0


class ConsentRenewal:
    def __init__(
        self,
        consent: ConsentService,
        interval: float = DEFAULT_CHECK_INTERVAL,
        backoff: Backoff | None = None,
    ) -> None:
        self.consent = consent
        self.interval = interval
        # Never wait longer after a failure than the schedule would anyway.
        self.outage = Outage(log, "The consent check", backoff or Backoff(cap=min(30.0, interval)))

    async def status_line(self) -> str:
        now = self.consent.clock.now()
        version = self.consent.settings.version
        valid = [
            r
            for r in await self.consent.repo.open_records()
            if validity(r, now, version) is Validity.VALID
        ]
        return (
            f"Consent: {len(valid)} valid (terms version {version}); renewal and expiry "
            f"checked every {self.interval:.0f} s"
        )

    async def run(self) -> None:
        """Check every `interval`; while the check fails (Postgres down), back off and log the
        outage once."""
        await run_forever(self.check_consents, interval=self.interval, outage=self.outage)

    async def check_consents(self) -> None:
        """Record lapsed consents (`consent.expired`) and ask again before they lapse or when
        the terms changed."""
        now = self.consent.clock.now()
        for record in await self.consent.repo.open_records():
            try:
                await self._check_one(record, now)
            except Exception:
                ref = error_reference()
                log.exception("Consent check of record %d failed (ref %s)", record.id, ref)

    async def _check_one(self, record: ConsentRecord, now: datetime) -> None:
        if expiry_due(record, now):
            # Decided by a read under the audit lock, then the row first and the mark after.
            async with UnitOfWork.locked(self.consent.audit) as unit:
                latest = await self.consent.repo.by_id(record.id)
                if latest is None or latest.expiry_recorded_at is not None:
                    return
                unit.record(
                    AuditEntry(
                        actor="system",
                        action="consent.expired",
                        room_id=record.room_id,
                        subject=record.user_id,
                        details={
                            "consent_id": record.id,
                            "expires_at": record.expires_at.isoformat(),
                        },
                    )
                )
                unit.then(partial(self.consent.repo.mark_expiry_recorded, record.id, now))
            if record.user_id in await self.consent.patients_in(record.room_id):
                await self.consent.tell(
                    record.room_id,
                    f"{record.user_id}: your consent to texting here expired on "
                    f"{day_text(record.expires_at)}. Staff will not text you here until you agree "
                    f"again: send `{self.consent.prefix} consent` to read the terms.",
                    [record.user_id],
                )
            return
        reason = reask_reason(
            record, now, self.consent.settings.version, self.consent.settings.valid_days
        )
        if reason is None:
            return
        if record.user_id in await self.consent.patients_in(record.room_id):
            asked = await self.consent.ask(
                record.room_id, [record.user_id], reason, record=record, force=True
            )
            if not asked:
                return  # the terms did not go out: ask again at the next check
        await self.consent.repo.mark_reasked(record.id, now)
