"""Consent enforcement through the event pipeline: the rows, redactions and
notices a message causes in each enforcement mode, with the in-memory Matrix and real
Postgres. What only a homeserver shows (the redaction reaching clients, notices encrypted to
the room) stays in tests/e2e/test_consent.py and test_policy.py."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from mautrix.types import EventID
from mautrix.util.async_db import Database

from bot.db.audit import AuditLog
from bot.policy.hours import parse_hours
from tests.service.builder import ADMIN, BOT, PATIENT, ROOM, STAFF, ServiceBot, build

NEW_YORK = ZoneInfo("America/New_York")


def care_room(bot: ServiceBot) -> None:
    bot.matrix.room(ROOM, members=[STAFF, PATIENT], power={STAFF: 100, BOT: 50})


async def test_redact_mode_records_the_violation_queues_the_redaction_and_one_notice(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    first = bot.encrypted(PATIENT, "hello, is anyone there")
    await bot.handle(first)

    event_id = first["event_id"]
    assert await bot.actions(event_id) == ["message.sent", "policy.violation"]
    [violation] = await bot.rows("policy.violation")
    assert violation["actor"] == PATIENT and violation["subject"] == PATIENT
    assert violation["details"] == {
        "kind": "patient_without_consent",
        "kinds": ["patient_without_consent"],
        "patients": [PATIENT],
        "enforcement": "redact",
        "redacted": True,
    }
    [redaction] = await bot.queued("redact")
    assert redaction["payload"]["event_id"] == event_id
    assert "before the patient agreed" in redaction["payload"]["reason"]
    [notice] = await bot.queued("notice")
    assert notice["payload"]["mentions"] == [PATIENT]
    assert "your message was removed" in notice["payload"]["text"]
    assert "!chaperone consent agree" in notice["payload"]["text"]
    assert bot.metrics.violations.labels(kind="patient_without_consent")._value.get() == 1
    assert bot.metrics.redactions.labels(cause="consent")._value.get() == 1

    # Carried out after the commit: the redaction's own row names its cause, once.
    await bot.outbox.drain()
    assert bot.effects.redactions == [(ROOM, event_id)]
    [removed] = await bot.rows("message.redacted")
    assert removed["actor"] == BOT and removed["subject"] == PATIENT
    assert removed["details"] == {"redacts": event_id, "cause": "policy.violation"}
    assert removed["event_id"] is not None and removed["event_id"] != event_id


async def test_a_second_violation_within_ten_minutes_is_redacted_without_a_second_notice(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    first, second = bot.encrypted(PATIENT, "one"), bot.encrypted(PATIENT, "two")
    await bot.handle(first)
    bot.clock.advance(60)
    third = bot.encrypted(PATIENT, "three")
    await bot.handle(second, third)

    assert len(await bot.rows("policy.violation")) == 3
    assert len(await bot.queued("redact")) == 3
    assert len(await bot.queued("notice")) == 1
    bot.clock.advance(11 * 60)
    await bot.handle(bot.encrypted(PATIENT, "four"))
    assert len(await bot.queued("notice")) == 2


async def test_warn_mode_tells_the_sender_and_redacts_nothing(bot: ServiceBot) -> None:
    care_room(bot)
    await bot.set_policy("enforcement", "warn")
    message = bot.encrypted(PATIENT, "hi, I have a question")
    await bot.handle(message)

    [violation] = await bot.rows("policy.violation", event_id=message["event_id"])
    assert violation["details"]["enforcement"] == "warn"
    assert "redacted" not in violation["details"]
    assert await bot.queued("redact") == []
    [notice] = await bot.queued("notice")
    assert notice["payload"]["text"].startswith(f"{PATIENT}: please note")
    assert "consent agree" in notice["payload"]["text"]


async def test_audit_mode_only_records(bot: ServiceBot) -> None:
    care_room(bot)
    await bot.set_policy("enforcement", "audit")
    message = bot.encrypted(PATIENT, "hello?")
    await bot.handle(message)

    assert await bot.actions(message["event_id"]) == ["message.sent", "policy.violation"]
    [violation] = await bot.rows("policy.violation")
    assert violation["details"]["enforcement"] == "audit"
    assert await bot.queued() == []


async def test_dry_run_records_that_the_redaction_was_skipped(
    db: Database, audit: AuditLog
) -> None:
    bot = build(db, audit, dry_run=True)
    care_room(bot)
    await bot.handle(bot.encrypted(PATIENT, "hello"))
    [violation] = await bot.rows("policy.violation")
    assert violation["details"]["redacted"] is False
    assert violation["details"]["dry_run"] is True
    assert await bot.queued("redact") == []
    [notice] = await bot.queued("notice")
    assert "please note" in notice["payload"]["text"]


async def test_consent_off_judges_no_one(bot: ServiceBot) -> None:
    care_room(bot)
    await bot.set_policy("consent", "off")
    await bot.handle(bot.encrypted(PATIENT, "hello"), bot.encrypted(STAFF, "hi"))
    assert len(await bot.rows("message.sent")) == 2
    assert await bot.rows("policy.violation") == []


async def test_consent_agreed_by_command_then_messages_stand(bot: ServiceBot) -> None:
    care_room(bot)
    before = bot.encrypted(PATIENT, "hello")
    agree = bot.encrypted(PATIENT, "!chaperone consent agree")
    after = bot.encrypted(PATIENT, "thanks, see you tuesday")
    staff_reply = bot.encrypted(STAFF, "see you then")
    await bot.handle(before, agree, after, staff_reply)

    # The command is not judged like a message; what follows it in the same batch stands.
    assert sorted(await bot.actions(agree["event_id"])) == [
        "command.executed",
        "consent.granted",
        "message.sent",
    ]
    [violation] = await bot.rows("policy.violation")
    assert violation["event_id"] == before["event_id"]
    [redaction] = await bot.queued("redact")
    assert redaction["payload"]["event_id"] == before["event_id"]
    [granted] = await bot.rows("consent.granted")
    assert (granted["actor"], granted["subject"]) == (PATIENT, PATIENT)
    record = await bot.consent.repo.current(ROOM, PATIENT)
    assert record is not None and record.source == "message"
    assert record.event_id == agree["event_id"]
    # The staff reply reached a consenting patient: it counts against max_per_day.
    assert await bot.db.fetchval("SELECT count(*) FROM consent_contact") == 1


async def test_a_command_a_patient_may_not_run_is_judged_like_a_message(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    await bot.set_policy("enforcement", "audit")
    refused = bot.encrypted(PATIENT, "!chaperone policy set consent off")
    status = bot.encrypted(PATIENT, "!chaperone consent")
    await bot.handle(refused, status)

    assert await bot.actions(refused["event_id"]) == [
        "message.sent",
        "command.denied",
        "policy.violation",
    ]
    [denied] = await bot.rows("command.denied")
    assert denied["details"]["command"] == "policy set"
    # A command the patient may run is never a violation, consent or not (`consent` shows
    # the terms again).
    assert sorted(await bot.actions(status["event_id"])) == [
        "command.executed",
        "consent.terms_posted",
        "message.sent",
    ]


async def test_staff_messages_are_judged_by_the_patients_consent(bot: ServiceBot) -> None:
    care_room(bot)
    without = bot.encrypted(STAFF, "your appointment is confirmed")
    await bot.handle(without)
    [violation] = await bot.rows("policy.violation")
    assert violation["actor"] == STAFF and violation["subject"] == PATIENT
    assert violation["details"]["kind"] == "staff_without_patient_consent"
    [redaction] = await bot.queued("redact")
    assert "has not given consent" in redaction["payload"]["reason"]

    await bot.grants.agree(ROOM, PATIENT, EventID("$agreed"))
    allowed = bot.encrypted(STAFF, "see you at 3")
    admin_note = bot.encrypted(ADMIN, "noted")
    await bot.handle(allowed, admin_note)
    assert await bot.actions(allowed["event_id"]) == ["message.sent"]
    assert await bot.actions(admin_note["event_id"]) == ["message.sent"]
    assert len(await bot.rows("policy.violation")) == 1


async def test_staff_alone_with_the_bot_is_not_judged(bot: ServiceBot) -> None:
    bot.matrix.room(ROOM, members=[STAFF])
    await bot.handle(bot.encrypted(STAFF, "note to self"))
    assert await bot.rows("policy.violation") == []
    assert await bot.queued() == []


async def test_outside_hours_over_the_limit_and_after_revoke_are_flagged(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    # Evening and night hours only: 10:00 in New York is outside them.
    await bot.grants.agree(
        ROOM,
        PATIENT,
        EventID("$agree-night"),
        hours=parse_hours("daily 20:00-06:00"),
        tz=NEW_YORK,
        max_per_day=1,
    )
    asked, asked_again = bot.encrypted(PATIENT, "are you there?"), bot.encrypted(PATIENT, "?")
    late = bot.encrypted(STAFF, "your appointment is confirmed")
    await bot.handle(asked, asked_again, late)
    # The patient is told once that nobody reads this now; their messages stand.
    [after_hours, told_staff] = await bot.queued("notice")
    assert after_hours["payload"]["mentions"] == [PATIENT]
    assert after_hours["on_done"][0]["action"] == "notice.after_hours"
    assert told_staff["payload"]["mentions"] == [STAFF]
    assert "outside the contact hours" in told_staff["payload"]["text"]
    violations = await bot.rows("policy.violation")
    assert [(v["event_id"], v["details"]["kind"]) for v in violations] == [
        (late["event_id"], "outside_contact_hours")
    ]

    await bot.grants.agree(
        ROOM,
        PATIENT,
        EventID("$agree-day"),
        hours=parse_hours("daily 08:00-20:00"),
        tz=NEW_YORK,
        max_per_day=1,
    )
    bot.clock.advance(60)
    allowed, over = bot.encrypted(STAFF, "see you at 3"), bot.encrypted(STAFF, "and the form")
    await bot.handle(allowed, over)
    await bot.grants.revoke(ROOM, PATIENT, EventID("$revoke"))
    after_revoke = bot.encrypted(STAFF, "one more thing")
    await bot.handle(after_revoke)

    kinds = {v["event_id"]: v["details"]["kind"] for v in await bot.rows("policy.violation")}
    assert kinds == {
        late["event_id"]: "outside_contact_hours",
        over["event_id"]: "over_max_per_day",
        after_revoke["event_id"]: "staff_without_patient_consent",
    }
    redacted = {r["payload"]["event_id"] for r in await bot.queued("redact")}
    assert redacted == set(kinds)
    assert bot.metrics.redactions.labels(cause="consent")._value.get() == 3
    # One notice to staff within ten minutes, whatever the kind.
    staff_notices = [n for n in await bot.queued("notice") if n["payload"]["mentions"] == [STAFF]]
    assert len(staff_notices) == 1


async def test_what_is_not_text_is_judged_too(bot: ServiceBot) -> None:
    care_room(bot)
    sticker = bot.encrypted(
        PATIENT,
        event_type="m.sticker",
        content={"body": "a cat", "url": "mxc://x/y", "info": {}},
    )
    poll = bot.encrypted(
        PATIENT,
        event_type="org.matrix.msc3381.poll.start",
        content={"org.matrix.msc1767.text": "call me?"},
    )
    unreadable = bot.matrix.undecryptable(bot.message(PATIENT), withheld="m.unverified")
    await bot.handle(sticker, poll, unreadable)

    for event in (sticker, poll, unreadable):
        [violation] = await bot.rows("policy.violation", event_id=event["event_id"])
        assert violation["details"]["kind"] == "patient_without_consent"
    assert len(await bot.queued("redact")) == 3
    [failed] = await bot.rows("decryption.failed")
    assert failed["event_id"] == unreadable["event_id"]
    assert failed["details"]["reason"] == "withheld: m.unverified"


async def test_a_patient_who_joins_is_asked_once_staff_are_not(bot: ServiceBot) -> None:
    bot.matrix.room(ROOM, members=[STAFF])
    bot.matrix.rooms[ROOM].join(PATIENT)
    await bot.handle(bot.member(PATIENT, "join", prev="invite"))
    [terms] = await bot.queued("notice")
    assert terms["payload"]["mentions"] == [PATIENT]
    assert "consent terms" in terms["payload"]["text"]
    assert [r["action"] for r in terms["on_done"]] == ["consent.terms_posted"]

    await bot.handle(bot.member(ADMIN, "join", prev="invite"))
    bot.clock.advance(60)  # rejoining soon after is not asked again
    await bot.handle(bot.member(PATIENT, "leave", prev="join"))
    await bot.handle(bot.member(PATIENT, "join", prev="leave"))
    assert len(await bot.queued("notice")) == 1

    await bot.outbox.drain()
    [posted] = await bot.rows("consent.terms_posted")
    assert posted["subject"] == PATIENT and posted["details"]["reason"] == "patient_joined"
    assert posted["details"]["notice_event_id"] is not None
