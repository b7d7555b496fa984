"""The event pipeline with the in-memory Matrix and real Postgres: exactly once,
one event's trouble costing that event only, decryption outcomes, invites, the rows each kind
of event makes. What needs real E2EE or a real /sync (late keys arriving over to-device,
limited timelines, a crash mid-batch) stays in tests/e2e."""

from __future__ import annotations

from typing import Any

from mautrix.util.async_db import Database

from bot.db.audit import AuditLog
from bot.db.sync_state import SyncState
from bot.policy.audit_chain import message_hmac
from bot.service.observers import BatchOutcome, Observer
from tests.service.builder import (
    BOT,
    HMAC_KEY,
    PATIENT,
    ROOM,
    STAFF,
    ServiceBot,
    build,
)


def care_room(bot: ServiceBot) -> None:
    bot.matrix.room(ROOM, members=[STAFF, PATIENT], power={STAFF: 100, BOT: 50})


async def test_a_batch_is_committed_with_its_sync_position(bot: ServiceBot) -> None:
    care_room(bot)
    message = bot.encrypted(STAFF, "hello")
    batch = await bot.handle(message)

    [sent] = await bot.rows("message.sent")
    assert sent["event_id"] == message["event_id"] and sent["actor"] == STAFF
    assert sent["details"] == {
        "hmac": message_hmac(HMAC_KEY.encode(), "hello"),
        "msgtype": "m.text",
        "encrypted": True,
    }
    assert await SyncState(bot.db).get(BOT) == batch.next_batch
    assert bot.matrix.crypto_store.saves == 1  # the crypto bookkeeping, in the same commit
    assert bot.matrix.indices_read == [[message["event_id"]]]  # read once, before decrypting


async def test_a_replayed_batch_is_audited_and_acted_on_once(bot: ServiceBot) -> None:
    care_room(bot)
    batch = bot.batch(bot.encrypted(PATIENT, "hello"), bot.member(STAFF, "leave", prev="join"))
    await bot.pipeline.handle_batch(batch)
    await bot.pipeline.handle_batch(batch)  # as after a crash before the position was saved

    assert len(await bot.rows("message.sent")) == 1
    assert len(await bot.rows("policy.violation")) == 1
    assert len(await bot.rows("member.left")) == 1
    assert len(await bot.queued("redact")) == 1
    assert len(await bot.queued("notice")) == 1


class Raises(Observer):
    """Fails on the message "boom", after queuing an effect and a row that must be dropped."""

    async def on_message(self, fact: Any, outcome: BatchOutcome) -> None:
        if fact.body == "boom":
            outcome.entries.append(outcome.entries[-1])
            raise RuntimeError("a bug, quoting content that must not reach the audit log")


async def test_an_event_whose_handling_raises_becomes_event_failed_and_the_batch_goes_on(
    db: Database, audit: AuditLog
) -> None:
    bot = build(db, audit, observers=[Raises()])
    care_room(bot)
    before, boom, after = (bot.encrypted(PATIENT, t) for t in ("one", "boom", "three"))
    await bot.handle(before, boom, after)

    assert await bot.actions(boom["event_id"]) == ["event.failed"]
    [failed] = await bot.rows("event.failed")
    assert failed["actor"] == PATIENT and failed["room_id"] == ROOM
    assert failed["details"]["error"] == "RuntimeError"
    assert failed["details"]["type"] == "m.room.encrypted"
    assert "content" not in str(failed["details"])
    for ok in (before, after):
        assert await bot.actions(ok["event_id"]) == ["message.sent", "policy.violation"]
    # Only the two judged messages' redactions: what the failed event queued is dropped.
    redacted = {r["payload"]["event_id"] for r in await bot.queued("redact")}
    assert redacted == {before["event_id"], after["event_id"]}


class RefusedByPostgres(Observer):
    """Queues, for the message "two", a write Postgres refuses (U+0000 in text)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def on_message(self, fact: Any, outcome: BatchOutcome) -> None:
        if fact.body != "two":
            return

        async def write() -> None:
            await self.db.execute(
                "INSERT INTO consent_notice (room_id, user_id, kind, sent_at)"
                " VALUES ($1, $2, 'violation', now())",
                fact.room_id,
                "@nul\x00:x",
            )

        outcome.writes.append(write)


async def test_a_batch_postgres_refuses_is_stored_event_by_event(
    db: Database, audit: AuditLog
) -> None:
    bot = build(db, audit, observers=[RefusedByPostgres(db)])
    care_room(bot)
    await bot.set_policy("enforcement", "audit")
    first, poisoned, third = (bot.encrypted(STAFF, t) for t in ("one", "two", "three"))
    batch = await bot.handle(first, poisoned, third)

    assert (await bot.actions(first["event_id"]))[0] == "message.sent"
    assert (await bot.actions(third["event_id"]))[0] == "message.sent"
    [failed] = await bot.rows("event.failed", event_id=poisoned["event_id"])
    assert failed["details"]["error"] == "CharacterNotInRepertoireError"
    assert await bot.rows("message.sent", event_id=poisoned["event_id"]) == []
    assert await SyncState(bot.db).get(BOT) == batch.next_batch


async def test_text_postgres_or_utf8_refuse_is_stored_in_a_safe_form(bot: ServiceBot) -> None:
    bot.matrix.room(ROOM, members=[STAFF])
    nul = bot.encrypted(STAFF, content={"msgtype": "m.te\x00xt", "body": "a"})
    surrogate = bot.encrypted(STAFF, "lone \ud800 half")
    await bot.handle(nul, surrogate)

    [odd] = await bot.rows("message.sent", event_id=nul["event_id"])
    assert odd["details"]["msgtype"] == "m.te\\u0000xt"
    [half] = await bot.rows("message.sent", event_id=surrogate["event_id"])
    assert half["details"]["hmac"] == message_hmac(HMAC_KEY.encode(), "lone \ud800 half")
    assert await bot.rows("event.failed") == []


async def test_an_event_whose_key_is_missing_waits_and_is_judged_when_it_decrypts(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    late = bot.matrix.undecryptable(bot.message(PATIENT, "sent before the key"))
    await bot.handle(late)

    assert await bot.actions(late["event_id"]) == []
    [waiting] = await bot.pipeline.pending.all()
    assert (waiting.event_id, waiting.room_id, waiting.session_id) == (
        late["event_id"],
        ROOM,
        "s-missing",
    )
    # Replayed while still waiting: it stays one pending row and nothing is audited.
    await bot.handle(late)
    assert len(await bot.pipeline.pending.all()) == 1
    assert await bot.actions(late["event_id"]) == []

    # The key arrives; handled again (as the retrier does), it is audited and judged once.
    bot.matrix.key_arrives(late["event_id"])
    await bot.handle(late)
    assert await bot.actions(late["event_id"]) == ["message.sent", "policy.violation"]


async def test_an_event_that_cannot_be_decrypted_is_recorded_and_judged(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    broken = bot.matrix.undecryptable(bot.message(PATIENT), missing_key=False)
    withheld = bot.matrix.undecryptable(bot.message(STAFF), withheld="m.blacklisted")
    await bot.handle(broken, withheld)

    [failed] = await bot.rows("decryption.failed", event_id=broken["event_id"])
    assert failed["details"] == {
        "reason": "DecryptionError",
        "session_id": "s-missing",
        "device_id": "DEVICE",
    }
    [violation] = await bot.rows("policy.violation", event_id=broken["event_id"])
    assert violation["details"]["kind"] == "patient_without_consent"
    [held] = await bot.rows("decryption.failed", event_id=withheld["event_id"])
    assert held["details"]["reason"] == "withheld: m.blacklisted"
    # The room is told that the sender's app withheld the key, mentioning the sender.
    told = [n for n in await bot.queued("notice") if n["payload"]["mentions"] == [STAFF]]
    assert any("m.blacklisted" in n["payload"]["text"] for n in told)
    assert await bot.pipeline.pending.all() == []

    await bot.handle(broken, withheld)  # replayed: recorded once
    assert len(await bot.rows("decryption.failed")) == 2
    assert len(await bot.rows("policy.violation")) == 2


async def test_redacted_before_read_is_recorded_without_decrypting(bot: ServiceBot) -> None:
    care_room(bot)
    gone = bot.encrypted(PATIENT, "hello")
    gone["unsigned"] = {"redacted_because": {"type": "m.room.redaction"}}
    await bot.handle(gone)

    [sent] = await bot.rows("message.sent")
    assert sent["details"] == {"encrypted": True, "redacted_before_read": True}
    assert bot.matrix.decrypted == []
    assert await bot.rows("policy.violation") == []


async def test_the_bots_own_messages_and_redactions_are_not_judged_or_recorded_twice(
    bot: ServiceBot,
) -> None:
    care_room(bot)
    own = bot.encrypted(BOT, "a notice")
    own_redaction = bot.message(BOT, event_type="m.room.redaction", content={})
    own_redaction["redacts"] = "$something"
    staff_redaction = bot.message(STAFF, event_type="m.room.redaction", content={})
    staff_redaction["redacts"] = own["event_id"]
    await bot.handle(own, own_redaction, staff_redaction)

    assert await bot.actions(own["event_id"]) == ["message.sent"]
    assert await bot.actions(own_redaction["event_id"]) == []
    [redacted] = await bot.rows("message.redacted")
    assert redacted["actor"] == STAFF
    assert redacted["details"] == {"redacts": own["event_id"]}
    assert await bot.queued() == []


async def test_membership_and_power_level_changes_are_recorded(bot: ServiceBot) -> None:
    care_room(bot)
    await bot.set_policy("consent", "off")
    joined = bot.member(BOT, "join", prev="invite")
    patient_left = bot.member(PATIENT, "leave", prev="join")
    levels = bot.message(STAFF, event_type="m.room.power_levels")
    levels["state_key"] = ""
    levels["content"] = {"users": {STAFF: 100, BOT: 50}}
    levels["unsigned"] = {"prev_content": {"users": {STAFF: 100}}}
    await bot.handle(joined, patient_left, levels)

    [room_joined] = await bot.rows("room.joined")
    assert room_joined["event_id"] == joined["event_id"] and room_joined["subject"] == BOT
    [left] = await bot.rows("member.left")
    assert left["details"] == {"membership": "leave", "previous": "join"}
    [changed] = await bot.rows("power_levels.changed")
    assert changed["details"] == {"changes": {"users": {BOT: [None, 50]}}}
    assert await bot.db.fetchval("SELECT count(*) FROM rooms WHERE room_id = $1", ROOM) == 1


class SeesManaged(Observer):
    """Notes, for each message, whether its room is managed at that point of the batch."""

    def __init__(self, bot_rooms: Any) -> None:
        self.rooms = bot_rooms
        self.seen: list[bool] = []

    async def on_message(self, fact: Any, outcome: BatchOutcome) -> None:
        self.seen.append(await self.rooms.is_managed(fact.room_id))


class FailsOnJoin(Observer):
    async def on_membership(self, fact: Any, outcome: BatchOutcome) -> None:
        raise RuntimeError("a bug in a membership observer")


async def test_the_bots_join_is_stored_with_the_batch_and_seen_by_its_later_events(
    db: Database, audit: AuditLog
) -> None:
    from bot.db.rooms import RoomsRepo

    sees = SeesManaged(RoomsRepo(db))
    bot = build(db, audit, observers=[sees])
    care_room(bot)
    before = bot.message(STAFF, "before the join")
    joined = bot.member(BOT, "join", prev="invite")
    after = bot.message(STAFF, "after the join")
    await bot.handle(before, joined, after)

    assert sees.seen == [False, True]
    assert await db.fetchval("SELECT count(*) FROM rooms WHERE left_at IS NULL") == 1
    # The join's row comes after its audit row in the same commit: one transaction.
    await bot.handle(bot.member(BOT, "leave", prev="join"), bot.message(STAFF, "gone"))
    assert sees.seen == [False, True, False]
    assert await db.fetchval("SELECT count(*) FROM rooms WHERE left_at IS NULL") == 0


async def test_a_join_whose_handling_fails_does_not_make_the_room_managed(
    db: Database, audit: AuditLog
) -> None:
    bot = build(db, audit, observers=[FailsOnJoin()])
    care_room(bot)
    joined = bot.member(BOT, "join", prev="invite")
    await bot.handle(joined)

    assert await bot.actions(joined["event_id"]) == ["event.failed"]
    assert await db.fetchval("SELECT count(*) FROM rooms") == 0


async def test_invites_from_staff_are_joined_others_rejected(bot: ServiceBot) -> None:
    staff_invite = {"type": "m.room.member", "sender": STAFF, "event_id": "$inv1"}
    stranger_invite = {"type": "m.room.member", "sender": PATIENT, "event_id": "$inv2"}
    batch = bot.batch(invites={"!by-staff:x": staff_invite, "!by-patient:x": stranger_invite})
    await bot.pipeline.handle_batch(batch)

    assert bot.matrix.joined == ["!by-staff:x"]
    assert bot.matrix.rejected == ["!by-patient:x"]
    [rejected] = await bot.rows("invite.rejected")
    assert (rejected["actor"], rejected["room_id"], rejected["subject"]) == (
        PATIENT,
        "!by-patient:x",
        BOT,
    )
    assert await bot.rows("room.joined") == []  # recorded from the join event when it syncs


async def test_the_room_hears_of_a_withheld_key_once_a_day_per_sender_device(
    bot: ServiceBot,
) -> None:
    care_room(bot)

    async def withheld_notices() -> int:
        notices = await bot.queued("notice")
        return sum("withheld the encryption key" in n["payload"]["text"] for n in notices)

    for _ in range(3):
        await bot.handle(bot.matrix.undecryptable(bot.message(STAFF), withheld="m.unverified"))
    assert await withheld_notices() == 1

    bot.clock.advance(23 * 3600)
    await bot.handle(bot.matrix.undecryptable(bot.message(STAFF), withheld="m.unverified"))
    assert await withheld_notices() == 1
    bot.clock.advance(3600)
    await bot.handle(bot.matrix.undecryptable(bot.message(STAFF), withheld="m.unverified"))
    assert await withheld_notices() == 2
