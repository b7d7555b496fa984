"""Services against real Postgres with one FakeClock moved forward: consent expiry and renewal,
retention due, the pacing of the consent terms. The Matrix parts these services are built with
are not reached on these paths; they are `NOT_REACHED` (None), so touching one fails the test."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from mautrix.types import EventID, RoomID, UserID
from mautrix.util.async_db import Database

from bot.clock import FakeClock
from bot.config import Config, parse_config
from bot.db.audit import AuditLog
from bot.db.consent import ConsentRepo
from bot.db.consent_notices import ConsentNotices
from bot.db.message_counts import MessageCounts
from bot.db.outbox import OutboxRepo
from bot.db.retention_rooms import RetentionRooms
from bot.db.room_policy import RoomPolicyRepo
from bot.db.rooms import RoomsRepo
from bot.db.tracked_events import TrackedEvents
from bot.policy.consent import Validity
from bot.policy.retention import TrackedEvent
from bot.service.consent import TERMS_REPOST_AFTER, ConsentService
from bot.service.consent_grants import ConsentGrants
from bot.service.consent_renewal import ConsentRenewal
from bot.service.outbox import EffectQueue
from bot.service.policy import PolicyService, defaults_from
from bot.service.retention import RetentionService
from bot.service.tracking import Backfiller
from tests.unit.test_config import VALID

ROOM = RoomID("!care:clinic.test")
PATIENT = UserID("@patient:clinic.test")
ADMIN = UserID("@admin:clinic.test")
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = 86400.0
NOT_REACHED = cast(Any, None)


def config() -> Config:
    return parse_config(copy.deepcopy(VALID), {}, Path("/srv/chaperone"))


def consent_service(
    cfg: Config, db: Database, audit: AuditLog, clock: FakeClock
) -> ConsentService:
    return ConsentService(
        cfg,
        ConsentRepo(db),
        MessageCounts(db),
        ConsentNotices(db),
        audit,
        NOT_REACHED,  # access
        NOT_REACHED,  # gateway
        NOT_REACHED,  # effects
        NOT_REACHED,  # policy
        clock,
        EffectQueue(OutboxRepo(db), audit, clock),
    )


async def test_consent_expires_as_the_clock_passes_its_end_and_is_renewed(
    db: Database, audit: AuditLog
) -> None:
    cfg, clock = config(), FakeClock(START)
    consent = consent_service(cfg, db, audit, clock)
    grants = ConsentGrants(cfg, consent.repo, audit, NOT_REACHED, clock)
    renewal = ConsentRenewal(consent)

    first = await grants.agree(ROOM, PATIENT, EventID("$agree-1"))
    assert first.granted_at == START
    _, state = await consent.state_of(ROOM, PATIENT, clock.now())
    assert state is Validity.VALID
    assert (await renewal.status_line()).startswith("Consent: 1 valid")

    clock.advance(cfg.consent.valid_days * DAY - 60)  # a minute before it ends
    _, state = await consent.state_of(ROOM, PATIENT, clock.now())
    assert state is Validity.VALID

    clock.advance(120)  # a minute after
    _, state = await consent.state_of(ROOM, PATIENT, clock.now())
    assert state is Validity.EXPIRED
    assert (await renewal.status_line()).startswith("Consent: 0 valid")

    renewed = await grants.agree(ROOM, PATIENT, EventID("$agree-2"))
    assert renewed.id != first.id and renewed.granted_at == clock.now()
    assert renewed.expires_at > first.expires_at
    record, state = await consent.state_of(ROOM, PATIENT, clock.now())
    assert state is Validity.VALID and record is not None and record.id == renewed.id
    granted = await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'consent.granted'")
    assert granted == 2


async def test_the_terms_are_not_posted_again_within_the_repost_pause(
    db: Database, audit: AuditLog
) -> None:
    cfg, clock = config(), FakeClock(START)
    consent = consent_service(cfg, db, audit, clock)
    pause = TERMS_REPOST_AFTER.total_seconds()

    assert await consent.ask(ROOM, [PATIENT], "joined") == [PATIENT]
    assert await consent.ask(ROOM, [PATIENT], "joined") == []
    clock.advance(pause - 60)
    assert await consent.ask(ROOM, [PATIENT], "joined") == []
    # A fresh service (a restart) knows the last notice from Postgres, not from its cache.
    restarted = consent_service(cfg, db, audit, clock)
    assert await restarted.ask(ROOM, [PATIENT], "joined") == []
    clock.advance(120)
    assert await restarted.ask(ROOM, [PATIENT], "joined") == [PATIENT]
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2

    # Once the patient agreed, the terms are not posted at all.
    await ConsentGrants(cfg, consent.repo, audit, NOT_REACHED, clock).agree(
        ROOM, PATIENT, EventID("$a")
    )
    clock.advance(pause + 60)
    assert await restarted.ask(ROOM, [PATIENT], "joined") == []


async def test_messages_become_due_for_retention_as_the_clock_passes_the_room_retention(
    db: Database, audit: AuditLog
) -> None:
    cfg, clock = config(), FakeClock(START)
    policy = PolicyService(cfg, RoomPolicyRepo(db, defaults_from(cfg)), audit)
    await policy.set(ROOM, "retention", "1d", ADMIN, EventID("$policy"))
    tracked, rooms_state = TrackedEvents(db), RetentionRooms(db)
    start_ms = int(START.timestamp() * 1000)
    await tracked.record(
        [
            TrackedEvent(
                EventID(f"$m{i}"), ROOM, PATIENT, "m.room.message", False, start_ms + i * 1000
            )
            for i in range(3)
        ]
    )
    retention = RetentionService(
        cfg,
        NOT_REACHED,  # gateway
        NOT_REACHED,  # effects
        policy,
        RoomsRepo(db),
        tracked,
        rooms_state,
        audit,
        NOT_REACHED,  # metrics
        NOT_REACHED,  # alerts
        None,
        Backfiller(NOT_REACHED, tracked, rooms_state, asyncio.Event()),
        clock=clock,
    )

    clock.advance(DAY - 60)
    preview, line = await retention.preview(ROOM)
    assert preview.count == 0
    assert line == "Retention 1d: nothing is due for removal."

    clock.advance(61)  # the first message is a day old
    preview, _ = await retention.preview(ROOM)
    assert preview.count == 1

    clock.advance(10)
    preview, line = await retention.preview(ROOM)
    assert preview.count == 3
    assert "the next sweep would remove 3 messages" in line

    await policy.set(ROOM, "legal_hold", "on", ADMIN, EventID("$hold"))
    preview, line = await retention.preview(ROOM)
    assert preview.count == 0
    assert line.startswith("Legal hold is on")
