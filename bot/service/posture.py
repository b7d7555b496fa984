"""Room posture: checked when the bot joins a room and on every relevant state change;
drift is audited and announced; `posture` reports and `posture fix` repairs what it may.

Also flags members who join from outside `roles.allowed_servers` (`disclosure.external_member`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from mautrix.types import EventID, RoomID, UserID

from bot.config import Config
from bot.db.audit import AuditEntry, AuditLog
from bot.db.posture import PostureRepo
from bot.db.rooms import RoomsRepo
from bot.db.unit_of_work import UnitOfWork, record_audit
from bot.matrix.effects import MatrixEffects
from bot.matrix.facts import MembershipFact
from bot.policy.posture import (
    CHECKED_TYPES,
    CODE_TYPES,
    FULL_CHECK_TYPES,
    Finding,
    FixPlan,
    RoomState,
    after_state_event,
    check_posture,
    is_external,
    new_codes,
    plan_fixes,
    power_holders,
    server_of,
)
from bot.policy.roles import Role, role_of
from bot.policy.room_policy import RoomPolicy
from bot.service.access import AccessService
from bot.service.events import Committed, EventBus, PolicyChanged
from bot.service.failures import error_reference
from bot.service.observers import BatchOutcome, Observer
from bot.service.policy import PolicyService
from bot.service.ports import RoomReader

log = logging.getLogger("chaperone.posture")

# A v12 creator's level, for the role rule: above any `roles.staff_power_level`.
CREATOR_LEVEL = 10**9


@dataclass(frozen=True)
class PostureReport:
    """A room's findings and, for each, whether the bot could fix it."""

    room_id: RoomID
    plans: list[FixPlan]
    bot_level: int


class PostureService(Observer):
    def __init__(
        self,
        config: Config,
        gateway: RoomReader,
        effects: MatrixEffects,
        audit: AuditLog,
        policy: PolicyService,
        repo: PostureRepo,
        rooms: RoomsRepo,
        bus: EventBus,
        access: AccessService,
        *,
        creations_settled: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.access = access
        self.gateway = gateway
        self.effects = effects
        self.audit = audit
        self.policy = policy
        self.repo = repo
        self.rooms = rooms
        # Told what is committed outside a sync batch (fixes, policy changes): Committed.
        self.bus = bus
        self.bot_user_id = config.bot.user_id
        self.allowed_servers = config.roles.allowed_servers
        # RoomCreator.settled: a room the bot is creating is judged once it is whole.
        self.creations_settled = creations_settled or _nothing

    # -- checking ---------------------------------------------------------------------------

    async def evaluate(self, room_id: RoomID) -> tuple[RoomState, list[Finding]]:
        """The room's current state from the homeserver, and what is wrong with it."""
        state = RoomState.from_events(await self.gateway.room_state(room_id))
        policy: RoomPolicy = await self.policy.get(room_id)
        findings = check_posture(
            state,
            require_encryption=policy.require_encryption,
            allowed_servers=self.allowed_servers,
            own_server=server_of(self.bot_user_id),
            patients_with_power=await self._patients_with_power(state),
        )
        return state, findings

    async def _patients_with_power(self, state: RoomState) -> dict[UserID, int | None]:
        """Members holding power over the room who are patients (not admins,
        not staff; with `roles.staff_power_level` set, enough power makes one staff)."""
        roles = self.config.roles
        patients: dict[UserID, int | None] = {}
        for user_id, level in power_holders(state, exclude={self.bot_user_id}).items():
            if await self.access.is_staff_or_admin(user_id):
                continue
            role = role_of(
                user_id,
                admins=(),
                staff=(),
                power_level=CREATOR_LEVEL if level is None else level,
                staff_power_level=roles.staff_power_level,
            )
            if role == Role.PATIENT:
                patients[user_id] = level
        return patients

    async def report(self, room_id: RoomID) -> PostureReport:
        state, findings = await self.evaluate(room_id)
        bot_level = await self.gateway.power_level(room_id, self.bot_user_id)
        plans = plan_fixes(findings, bot_level=bot_level, power_levels=state.power_levels)
        return PostureReport(room_id, plans, bot_level)

    async def _full_check(
        self, room_id: RoomID, previous: frozenset[str] | None
    ) -> tuple[list[str], list[str]] | None:
        """(new codes, codes now) from the room's current state; None when the homeserver
        could not be asked (logged with a reference, never raised: a room the bot can no
        longer read must not stop the sync loop)."""
        await self.creations_settled()
        try:
            _, findings = await self.evaluate(room_id)
        except Exception:
            log.warning("Posture check of %s failed (ref %s)", room_id, error_reference())
            return None
        return new_codes(previous or (), findings), [f.code for f in findings]

    # -- pipeline hooks ---------------------------------------------------------------------

    async def read_ahead(self, room_ids: Collection[RoomID]) -> None:
        await self.repo.read_ahead(room_ids)
        await self.policy.read_ahead(room_ids)

    async def on_state(self, raw: dict[str, Any], outcome: BatchOutcome) -> None:
        event_type = raw.get("type")
        if raw.get("state_key") != "":
            return
        if event_type not in CHECKED_TYPES and event_type not in FULL_CHECK_TYPES:
            return
        room_id = RoomID(str(raw.get("room_id", "")))
        previous = await self._previous(outcome, room_id)
        if previous is None:
            # History seen on joining is not drift: the bot's own join event, later in the
            # batch, takes the first look. A room joined before posture existed gets it now.
            if await self.rooms.is_managed(room_id):
                result = await self._full_check(room_id, None)
            else:
                return
        elif event_type in FULL_CHECK_TYPES:
            # Who holds power depends on members and roles, not on this event alone.
            result = await self._full_check(room_id, previous)
        else:
            policy = await self.policy.get(room_id)
            result = after_state_event(
                previous,
                str(event_type),
                raw.get("content") or {},
                require_encryption=policy.require_encryption,
                allowed_servers=self.allowed_servers,
                own_server=server_of(self.bot_user_id),
            )
        actor = str(raw.get("sender") or "system")
        self._record(outcome, room_id, result, actor=actor, event_id=raw.get("event_id"))

    async def on_membership(self, fact: MembershipFact, outcome: BatchOutcome) -> None:
        if fact.membership != "join" or fact.prev_membership == "join":
            return
        if fact.target == self.bot_user_id:
            previous = await self._previous(outcome, fact.room_id)
            result = await self._full_check(fact.room_id, previous)
            self._record(outcome, fact.room_id, result, actor="system", event_id=fact.event_id)
        elif is_external(fact.target, self.allowed_servers):
            outcome.entries.append(
                AuditEntry(
                    actor=fact.sender,
                    action="disclosure.external_member",
                    room_id=fact.room_id,
                    event_id=fact.event_id,
                    subject=fact.target,
                    details={
                        "server": server_of(fact.target),
                        "allowed_servers": list(self.allowed_servers),
                    },
                )
            )

    def _overlay(self, outcome: BatchOutcome) -> dict[RoomID, frozenset[str]]:
        """This batch's findings per room, ahead of the database until the batch commits."""
        overlay: dict[RoomID, frozenset[str]] = outcome.notes.setdefault("posture", {})
        return overlay

    async def _previous(self, outcome: BatchOutcome, room_id: RoomID) -> frozenset[str] | None:
        """The room's findings before this event; None when it was never checked."""
        overlay = self._overlay(outcome)
        if room_id in overlay:
            return overlay[room_id]
        stored = await self.repo.get(room_id)
        return None if stored is None else frozenset(stored)

    def _record(
        self,
        outcome: BatchOutcome,
        room_id: RoomID,
        result: tuple[list[str], list[str]] | None,
        *,
        actor: str,  # a user ID, or "system"
        event_id: EventID | None,
    ) -> None:
        """Drift rows into the batch; the room's findings saved when the batch commits."""
        if result is None:
            return
        new, codes = result
        overlay = self._overlay(outcome)
        if room_id not in overlay:

            async def save() -> None:
                await self.repo.save(room_id, sorted(overlay[room_id], key=_CODE_ORDER.index))

            outcome.writes.append(save)
        overlay[room_id] = frozenset(codes)
        if new:
            outcome.entries.append(_drift_entry(room_id, actor, event_id, new, codes))

    async def on_policy_change(self, change: PolicyChanged) -> None:
        """`require_encryption` changed: the room may have drifted without any state event."""
        if change.field != "require_encryption":
            return
        room_id = change.room_id
        stored = await self.repo.get(room_id)
        result = await self._full_check(room_id, None if stored is None else frozenset(stored))
        if result is None:
            return
        new_found, codes = result
        entries = [_drift_entry(room_id, "system", None, new_found, codes)] if new_found else []
        await (
            UnitOfWork(self.audit, entries).then(partial(self.repo.save, room_id, codes)).commit()
        )
        if entries:
            await self.bus.publish(Committed(entries))

    # -- fixing -----------------------------------------------------------------------------

    async def fix(self, room_id: RoomID, *, actor: UserID, event_id: EventID | None) -> list[str]:
        """Apply every fix the bot has the power for; the reply lines."""
        report = await self.report(room_id)
        if not report.plans:
            return [f"Posture of {room_id}: nothing to fix."]
        fixed: list[str] = []
        dry: list[str] = []
        not_fixed: list[tuple[Finding, str]] = []
        for plan in report.plans:
            finding = plan.finding
            if not plan.allowed:
                not_fixed.append((finding, _power_reason(plan, report.bot_level)))
                continue
            try:
                result = await self.effects.set_state(
                    room_id, finding.event_type, dict(finding.content)
                )
            except Exception as e:
                ref = error_reference()
                log.warning("Posture fix %s in %s failed (ref %s)", finding.code, room_id, ref)
                not_fixed.append((finding, f"the homeserver refused ({type(e).__name__}, {ref})"))
                continue
            (fixed if result.done else dry).append(finding.code)
        # The room's recorded findings follow when the state events come back through sync.
        entries = []
        if fixed or not_fixed:
            entries.append(
                AuditEntry(
                    actor=actor,
                    action="posture.fixed",
                    room_id=room_id,
                    event_id=event_id,
                    details={
                        "fixed": fixed,
                        "not_fixed_codes": [f.code for f, _ in not_fixed],
                        "not_fixed": [{"code": f.code, "reason": r} for f, r in not_fixed],
                        "dry_run": dry,
                    },
                )
            )
        if entries:
            await record_audit(self.audit, entries)
            await self.bus.publish(Committed(entries))
        return _fix_lines(room_id, fixed, dry, not_fixed)


_CODE_ORDER = list(CODE_TYPES)


async def _nothing() -> None:
    return None


def _drift_entry(
    room_id: RoomID, actor: str, event_id: EventID | None, new: list[str], codes: list[str]
) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        action="posture.drift",
        room_id=room_id,
        event_id=event_id,
        details={"new": new, "findings": codes},
    )


def _power_reason(plan: FixPlan, bot_level: int) -> str:
    if plan.reason:
        return plan.reason
    return (
        f"needs power level {plan.needed} for {plan.finding.event_type}; the bot has {bot_level}"
    )


def _fix_lines(
    room_id: RoomID, fixed: Sequence[str], dry: Sequence[str], not_fixed: list[tuple[Finding, str]]
) -> list[str]:
    lines = [f"Posture fix in {room_id}:"]
    if fixed:
        lines.append("✅ fixed: " + ", ".join(fixed))
    if dry:
        lines.append("🧪 would fix (dry-run): " + ", ".join(dry))
    for finding, reason in not_fixed:
        lines.append(f"❌ could not fix {finding.code} ({finding.problem}): {reason}")
    return lines


def report_lines(report: PostureReport) -> list[str]:
    """`posture` output: each finding, its fix, and whether the bot could apply it."""
    if not report.plans:
        return [f"Posture of {report.room_id}: ✅ all checks pass."]
    lines = [f"Posture of {report.room_id}: {len(report.plans)} problem(s)"]
    for plan in report.plans:
        f = plan.finding
        how = (
            "`posture fix` can do this" if plan.allowed else _power_reason(plan, report.bot_level)
        )
        lines.append(f"⚠️ {f.code}: {f.problem} — fix: {f.fix} ({how})")
    return lines
