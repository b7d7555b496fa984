"""The foundation end to end: real Synapse, real Postgres, real E2EE clients."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from mautrix.types import RoomID

from bot.devtools.e2ee_client import E2EEClient
from bot.policy.audit_chain import message_hmac
from tests.e2e.bot_env import HMAC_KEY, BotEnv, RunningBot
from tests.fixtures_synapse import MakeE2EEUser


async def audit_rows(db_url: str, action: str, **where: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        clauses = ["action = $1"] + [f"{k} = ${i + 2}" for i, k in enumerate(where)]
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT * FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY seq",
            action,
            *where.values(),
        )
        return rows
    finally:
        await conn.close()


async def wait_rows(
    db_url: str, action: str, count: int = 1, timeout: float = 15, **where: str
) -> list[asyncpg.Record]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            rows = await audit_rows(db_url, action, **where)
        except asyncpg.UndefinedTableError:  # a bot process still running its migrations
            rows = []
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def staffed_room(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, bot: RunningBot
) -> tuple[E2EEClient, E2EEClient, RoomID]:
    """A staff member's encrypted room with the bot and a patient in it."""
    staff = await e2ee_user(credentials=bot_env.staff)
    patient = await e2ee_user("patient")
    room_id = await staff.create_room(invite=[bot_env.bot_user, patient.user_id], name="care")
    await patient.wait_for_membership(room_id, patient.user_id, "invite")
    await patient.join(room_id)
    await staff.wait_for_membership(room_id, bot_env.bot_user, "join")
    return staff, patient, room_id


async def test_bot_joins_on_staff_invite_and_rejects_others(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff = await e2ee_user(credentials=bot_env.staff)
    stranger = await e2ee_user("stranger")

    staff_room = await staff.create_room(invite=[bot_env.bot_user])
    await staff.wait_for_membership(staff_room, bot_env.bot_user, "join")
    joined = await wait_rows(db_url, "room.joined", room_id=staff_room)
    assert len(joined) == 1

    other_room = await stranger.create_room(invite=[bot_env.bot_user])
    await stranger.wait_for_membership(other_room, bot_env.bot_user, "leave")
    rejected = await wait_rows(db_url, "invite.rejected", room_id=other_room)
    assert [r["actor"] for r in rejected] == [stranger.user_id]
    assert await audit_rows(db_url, "room.joined", room_id=other_room) == []


async def test_patient_message_is_audited_once_as_hmac_and_plaintext_is_nowhere(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)
    secret_words = "my appointment worries me 7f3a9c"
    event_id = await patient.send_text(room_id, secret_words)

    rows = await wait_rows(db_url, "message.sent", event_id=event_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["actor"] == patient.user_id
    details = json.loads(row["details"])
    assert details["hmac"] == message_hmac(HMAC_KEY.encode(), secret_words)
    assert details["encrypted"] is True

    conn = await asyncpg.connect(db_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        for t in tables:
            dump = await conn.fetchval(
                f"SELECT coalesce(string_agg(x::text, '\n'), '') FROM \"{t['table_name']}\" x"
            )
            assert "7f3a9c" not in dump, f"plaintext found in {t['table_name']}"
    finally:
        await conn.close()


async def test_help_lists_only_callers_commands_and_unknown_gets_one_line_error(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)

    await patient.send_text(room_id, "!chaperone help")
    # (The bot has also posted the consent terms to the patient: wait for the help reply.)
    reply = await patient.wait_for_message(
        room_id, sender=bot_env.bot_user, predicate=lambda e: "role: patient" in e.content.body
    )
    assert str(reply.content.msgtype) == "m.notice"
    assert patient.was_encrypted(reply)
    assert "help" in reply.content.body
    assert "!chaperone status" not in reply.content.body  # staff only

    await staff.send_text(room_id, "!chaperone help")
    staff_reply = await staff.wait_for_message(
        room_id, sender=bot_env.bot_user, predicate=lambda e: "role: staff" in e.content.body
    )
    assert "!chaperone status" in staff_reply.content.body

    await patient.send_text(room_id, "!chaperone status")
    refused = await patient.wait_for_message(
        room_id, sender=bot_env.bot_user, predicate=lambda e: "needs the" in e.content.body
    )
    assert "staff role" in refused.content.body
    denied = await wait_rows(db_url, "command.denied", actor=patient.user_id)
    assert len(denied) == 1 and json.loads(denied[0]["details"])["command"] == "status"

    await patient.send_text(room_id, "!chaperone frobnicate")
    error = await patient.wait_for_message(
        room_id, sender=bot_env.bot_user, predicate=lambda e: "Unknown command" in e.content.body
    )
    assert "\n" not in error.content.body.strip()
    assert "frobnicate" not in error.content.body  # never repeats what was sent


async def test_admin_commands_need_the_configured_device_trust(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    bot_env.write_config(bot__admin_min_trust="cross-signed")
    bot = await RunningBot(bot_env.config).start()
    try:
        admin = await e2ee_user(credentials=bot_env.admin)  # a device nobody cross-signed
        room_id = await admin.create_room(invite=[bot_env.bot_user])
        await admin.wait_for_membership(room_id, bot_env.bot_user, "join")
        await admin.send_text(room_id, "!chaperone audit verify")
        reply = await admin.wait_for_message(
            room_id, sender=bot_env.bot_user, predicate=lambda e: "trust" in e.content.body
        )
        assert "cross-signed" in reply.content.body
        denied = await wait_rows(db_url, "command.denied", actor=admin.user_id)
        details = json.loads(denied[0]["details"])
        assert details["command"] == "audit verify" and details["trust"] == "any"
        assert await wait_rows(db_url, "audit.verified", timeout=0.5) == []
    finally:
        await bot.stop()
