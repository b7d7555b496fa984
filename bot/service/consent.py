"""The consent flow: who needs to agree, the terms posted and recorded, show and
list, notices not repeated, per-day counts. Recording is in `consent_grants`, enforcement in
`consent_enforcement`, renewal and expiry in `consent_renewal`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from mautrix.types import EventID, RoomID, UserID

from bot.clock import Clock
from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.consent import ConsentRepo
from bot.db.consent_notices import ConsentNotices
from bot.db.message_counts import MessageCounts
from bot.db.unit_of_work import Write, record_audit
from bot.policy.consent import (
    ConsentRecord,
    Validity,
    terms_sha256,
    validity,
)
from bot.policy.hours import day_bounds, parse_timezone
from bot.policy.roles import Role
from bot.service.access import AccessService
from bot.service.events import PolicyChanged
from bot.service.failures import error_reference
from bot.service.observers import BatchOutcome
from bot.service.outbox import EFFECT_EVENT_ID, EffectQueue, queued_notice
from bot.service.policy import PolicyService
from bot.service.ports import Notices, RoomReader

log = logging.getLogger("chaperone.consent")

# Terms are not posted to the same patient in the same room more often than this, unless the
# bot asks for a renewal (a patient who joins, leaves and rejoins is not flooded).
TERMS_REPOST_AFTER = timedelta(hours=1)


def day_text(at: datetime) -> str:
    """A date as shown to users (YYYY-MM-DD)."""
    return at.strftime("%Y-%m-%d")


class ConsentService:
    def __init__(
        self,
        config: Config,
        repo: ConsentRepo,
        counts: MessageCounts,
        notices: ConsentNotices,
        audit: AuditLog,
        access: AccessService,
        gateway: RoomReader,
        effects: Notices,
        policy: PolicyService,
        clock: Clock,
        queue: EffectQueue,
    ) -> None:
        self.config = config
        self.settings = config.consent
        self.repo = repo
        self.counts = counts
        self.notices = notices
        self.audit = audit
        self.access = access
        self.gateway = gateway
        self.effects = effects
        self.policy = policy
        self.clock = clock
        self.queue = queue
        self.bot_user_id = config.bot.user_id
        self.prefix = config.bot.command_prefix
        self.terms_hash = terms_sha256(self.settings.terms)
        self._notice_cache: dict[tuple[RoomID, UserID, str], datetime] = {}
        # Staff messages counted in a batch that has not committed yet: (room, patient) ->
        # event_id -> time. Unioned with the stored rows, so nothing is counted twice.
        self._pending_contacts: dict[tuple[RoomID, UserID], dict[EventID, datetime]] = {}

    # -- who and what ------------------------------------------------------------------------

    async def patients_in(self, room_id: RoomID) -> list[UserID]:
        """Joined members whose role in the room is patient (never the bot)."""
        patients = []
        for user_id in await self.gateway.joined_members(room_id):
            if user_id == self.bot_user_id:
                continue
            if await self.access.role(room_id, user_id) == Role.PATIENT:
                patients.append(user_id)
        return patients

    async def state_of(
        self, room_id: RoomID, user_id: UserID, at: datetime
    ) -> tuple[ConsentRecord | None, Validity]:
        record = await self.repo.current(room_id, user_id)
        return record, validity(record, at, self.settings.version)

    def default_zone(self) -> ZoneInfo:
        return parse_timezone(self.settings.default_timezone)

    # -- notices ---------------------------------------------------------------------------

    async def tell(self, room_id: RoomID, text: str, mentions: Sequence[UserID]) -> str | None:
        """Post a notice mentioning `mentions`; None (logged with a reference) if it failed, so
        one room's trouble does not hold up the batch."""
        try:
            return await self.effects.notice(room_id, text, mentions=mentions)
        except Exception as e:
            ref = error_reference()
            log.warning(
                "Could not post a notice in %s: %s (ref %s)", room_id, type(e).__name__, ref
            )
            return None

    async def last_notice(self, room_id: RoomID, user_id: UserID, kind: str) -> datetime | None:
        cached = self._notice_cache.get((room_id, user_id, kind))
        stored = await self.notices.last(room_id, user_id, kind)
        known = [t for t in (cached, stored) if t is not None]
        return max(known) if known else None

    def noted(self, room_id: RoomID, user_id: UserID, kind: str, at: datetime) -> Write:
        """Remember a notice now (later events in the same batch see it); the returned write
        stores it with the batch."""
        key = (room_id, user_id, kind)
        if key not in self._notice_cache or self._notice_cache[key] < at:
            self._notice_cache[key] = at

        async def write() -> None:
            await self.notices.sent(room_id, user_id, kind, at)

        return write

    # -- per-day counts ----------------------------------------------------------------------

    async def sent_today(
        self, room_id: RoomID, patient: UserID, at: datetime, tz: ZoneInfo, except_event: EventID
    ) -> int:
        """Staff messages the patient received on their local day of `at` (not counting
        `except_event`, the message being judged)."""
        start, end = day_bounds(at, tz)
        ids = await self.counts.event_ids(room_id, patient, start, end)
        pending = self._pending_contacts.get((room_id, patient), {})
        ids |= {e for e, t in pending.items() if start <= t < end}
        ids.discard(except_event)
        return len(ids)

    def count_contact(
        self, room_id: RoomID, patient: UserID, event_id: EventID, sender: UserID, at: datetime
    ) -> Write:
        pending = self._pending_contacts.setdefault((room_id, patient), {})
        pending[event_id] = at
        horizon = at - timedelta(days=2)
        for old in [e for e, t in pending.items() if t < horizon]:
            del pending[old]

        async def write() -> None:
            await self.counts.add(room_id, patient, event_id, sender, at)

        return write

    # -- terms -------------------------------------------------------------------------------

    def terms_text(
        self, mentions: Sequence[UserID], reason: str, record: ConsentRecord | None
    ) -> str:
        s = self.settings
        who = ", ".join(mentions)
        if reason == "expiring" and record is not None:
            head = (
                f"{who}: your consent to texting here ends on {day_text(record.expires_at)}. "
                "To keep texting, please read the terms again and agree:"
            )
        elif reason == "new_terms":
            head = (
                f"{who}: our consent terms have changed (now version {s.version}). Staff will "
                "not text you here until you agree to them:"
            )
        elif mentions:
            head = f"{who}: before we text, please read our consent terms (version {s.version}):"
        else:
            head = f"Our consent terms (version {s.version}):"
        return "\n".join(
            [
                head,
                "",
                s.terms,
                "",
                f"Unless you choose otherwise: contact hours {s.default_hours} "
                f"({s.default_timezone}), at most {s.default_max_per_day} messages a day.",
                f"• To agree: {self.prefix} consent agree",
                f"• To choose your own: {self.prefix} consent agree "
                'hours="Mon-Fri 09:00-17:00" tz=America/New_York max_per_day=5 '
                "topics=scheduling,billing",
                f"• To read this again and see your status: {self.prefix} consent",
                f"• To withdraw later: {self.prefix} consent revoke",
            ]
        )

    def terms_entry(
        self,
        room_id: RoomID,
        patient: UserID,
        reason: str,
        notice_event_id: str | None,  # or EFFECT_EVENT_ID, filled in once the notice is out
        event_id: EventID | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            actor=self.bot_user_id,
            action="consent.terms_posted",
            room_id=room_id,
            event_id=event_id,
            subject=patient,
            details={
                "reason": reason,
                "terms_version": self.settings.version,
                "terms_sha256": self.terms_hash,
                "notice_event_id": notice_event_id,
            },
        )

    async def ask(
        self,
        room_id: RoomID,
        patients: Sequence[UserID],
        reason: str,
        outcome: BatchOutcome | None = None,
        *,
        record: ConsentRecord | None = None,
        force: bool = False,
    ) -> list[UserID]:
        """Post the terms (with the risk warning) mentioning the patients who need to agree,
        audit `consent.terms_posted` for each; return whom it asked."""
        now = self.clock.now()
        asking = []
        for patient in patients:
            if not force:
                _, state = await self.state_of(room_id, patient, now)
                last = await self.last_notice(room_id, patient, "terms")
                if state is Validity.VALID or (last and now - last < TERMS_REPOST_AFTER):
                    continue
            asking.append(patient)
        if not asking:
            return []
        # Recorded once the terms are out, naming the notice that carried them.
        entries = [self.terms_entry(room_id, p, reason, EFFECT_EVENT_ID) for p in asking]
        notice = queued_notice(
            room_id,
            self.terms_text(asking, reason, record),
            cause=f"terms:{reason}:{now.isoformat()}:{','.join(asking)}",
            mentions=asking,
            on_done=entries,
        )
        writes = [self.noted(room_id, p, "terms", now) for p in asking]
        await self.queue.persist(outcome, writes=writes, effects=[notice])
        return asking

    async def on_policy_changed(self, change: PolicyChanged) -> None:
        """Consent switched on in a room: ask the patients already there."""
        old, new = change.old, change.new
        if change.field == "consent" and new.consent == "required" and old.consent != "required":
            room_id = change.room_id
            await self.ask(room_id, await self.patients_in(room_id), "policy_changed")

    # -- commands ----------------------------------------------------------------------------

    def describe(self, record: ConsentRecord, state: Validity, *, you: bool) -> str:
        topics = ",".join(record.topics) if record.topics else "as in the terms"
        how = (
            f"recorded by {record.recorded_by} from an offline form"
            if record.source == "offline"
            else "given in this room"
        )
        terms = (
            f"hours {record.hours} ({record.timezone}), at most {record.max_per_day} messages "
            f"a day, topics: {topics}; {how} on {day_text(record.granted_at)}"
        )
        if state is Validity.VALID:
            return f"valid until {day_text(record.expires_at)} — {terms}"
        if state is Validity.REVOKED and record.revoked_at is not None:
            return f"withdrawn on {day_text(record.revoked_at)}"
        if state is Validity.EXPIRED:
            return f"expired on {day_text(record.expires_at)}"
        agree = f" — send `{self.prefix} consent agree` to agree to them" if you else ""
        return (
            f"given to terms version {record.terms_version}; the terms are now version "
            f"{self.settings.version}{agree}"
        )

    async def show(self, room_id: RoomID, user_id: UserID, role: Role, event_id: EventID) -> str:
        """The terms and the caller's own status (`consent`)."""
        now = self.clock.now()
        if role != Role.PATIENT:
            status = (
                f"You are {role.label} here; consent is given by patients "
                f"(`{self.prefix} consent list` shows theirs)."
            )
        else:
            record, state = await self.state_of(room_id, user_id, now)
            if record is None:
                status = (
                    f"Your status: you have not agreed yet. To agree: {self.prefix} consent agree"
                )
            else:
                status = "Your consent here: " + self.describe(record, state, you=True)
            # The reply shows the terms and the risk warning: that is evidence too.
            # (keyed by the command's event, so a replayed command is not recorded twice)
            await record_audit(
                self.audit,
                [self.terms_entry(room_id, user_id, "requested", None, event_id=event_id)],
            )
        return self.terms_text([], "requested", None) + "\n\n" + status

    async def list_room(self, room_id: RoomID) -> list[str]:
        """One line per patient in the room (and per patient who left with a record)."""
        now = self.clock.now()
        present = await self.patients_in(room_id)
        records = {r.user_id: r for r in await self.repo.current_in_room(room_id)}
        lines = []
        for patient in [*present, *sorted(set(records) - set(present))]:
            record = records.get(patient)
            state = validity(record, now, self.settings.version)
            where = "" if patient in present else " (not in the room)"
            if record is None:
                lines.append(f"• {patient}{where}: no consent yet")
                continue
            text = self.describe(record, state, you=False)
            if state is Validity.VALID:
                # EventID(""): no message is being judged, every counted one is shown
                sent = await self.sent_today(room_id, patient, now, record.zone, EventID(""))
                text += f"; {sent} of {record.max_per_day} messages today"
            lines.append(f"• {patient}{where}: {text}")
        return lines
