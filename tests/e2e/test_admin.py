"""The admin surface in chat: staff, offboarding, audit tail/export/verify, the management room,
and every admin command refused to a non-admin."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import asyncpg
from mautrix.crypto.attachments import decrypt_attachment
from mautrix.types import RoomID

from bot.devtools.e2ee_client import E2EEClient
from tests.e2e.admin_helpers import ask, bot_with_management_room
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import staffed_room, wait_rows
from tests.e2e.test_late_keys import identity_key, send_withheld, send_without_bot_key
from tests.fixtures_synapse import MakeE2EEUser

ADMIN_COMMANDS = (
    "posture fix",
    "audit export",
    "audit verify",
    "staff add @someone:localhost",
    "staff remove @someone:localhost",
    "staff list",
    "offboard @someone:localhost",
)


async def download(client: E2EEClient, mxc: str) -> bytes:
    """Through the authenticated media endpoint, with the client's own token."""
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    url = f"{client.client.api.base_url}/_matrix/client/v1/media/download/{server}/{media_id}"
    headers = {"Authorization": f"Bearer {client.client.api.token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def test_each_admin_command_is_refused_to_staff_naming_the_role(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff, patient, room = await staffed_room(bot_env, e2ee_user, running_bot)
    for command in ADMIN_COMMANDS:
        reply = await ask(staff, room, command, "needs the admin role", bot_env.bot_user)
        assert reply.content.body.startswith(f"⛔ {command.split(' @')[0]}")
    denied = await wait_rows(db_url, "command.denied", count=len(ADMIN_COMMANDS), room_id=room)
    assert sorted(json.loads(r["details"])["command"] for r in denied) == sorted(
        c.split(" @")[0] for c in ADMIN_COMMANDS
    )
    # Staff may look at posture and this room's audit trail.
    await ask(staff, room, "posture", "Posture of", bot_env.bot_user)
    tail = await ask(staff, room, "audit tail 30", "audit row(s)", bot_env.bot_user)
    assert "command.denied" in tail.content.body


async def test_staff_and_offboarding_from_every_managed_room(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        bot_user = bot_env.bot_user
        leaver = await e2ee_user("leaver")
        added = await ask(admin, management, f"staff add {leaver.user_id}", "staff", bot_user)
        assert "is now staff" in added.content.body
        listing = await ask(admin, management, "staff list", "Staff:", bot_user)
        assert leaver.user_id in listing.content.body and bot_env.staff[0] in listing.content.body

        rooms: list[RoomID] = []
        for _ in range(2):
            room = await admin.create_room(
                invite=[bot_user, leaver.user_id], power_level_override={"users": {bot_user: 100}}
            )
            await leaver.wait_for_membership(room, leaver.user_id, "invite")
            await leaver.join(room)
            await admin.wait_for_membership(room, bot_user, "join")
            rooms.append(room)

        reply = await ask(admin, management, f"offboard {leaver.user_id}", "Offboarded", bot_user)
        assert "removed from 2 room(s)" in reply.content.body
        assert "removed from the staff list" in reply.content.body
        for room in rooms:
            await admin.wait_for_membership(room, leaver.user_id, "leave")
        row = (await wait_rows(db_url, "staff.offboarded", subject=leaver.user_id))[0]
        assert sorted(json.loads(row["details"])["rooms"]) == sorted(rooms)
        kicked = await wait_rows(db_url, "member.kicked", count=2, subject=leaver.user_id)
        assert {r["room_id"] for r in kicked} == set(rooms)
        listing = await ask(admin, management, "staff list", "Staff:", bot_user)
        assert leaver.user_id not in listing.content.body
        assert len(await wait_rows(db_url, "staff.added", subject=leaver.user_id)) == 1

        bad = await ask(admin, management, "staff add nobody", "user:", bot_user)
        assert "@name:server" in bad.content.body and "\n" not in bad.content.body


async def test_audit_export_in_an_encrypted_room_is_an_encrypted_file_matching_the_db(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        bot_user = bot_env.bot_user
        room = await admin.create_room(invite=[bot_user])
        await admin.wait_for_membership(room, bot_user, "join")
        await admin.send_text(room, "a message for the record")
        await wait_rows(db_url, "message.sent", room_id=room, actor=admin.user_id)

        await admin.send_text(room, "!chaperone audit export action=message.sent")
        file_msg = await admin.wait_for_message(
            room, sender=bot_user, predicate=lambda e: str(e.content.msgtype) == "m.file"
        )
        reply = await admin.wait_for_message(
            room, sender=bot_user, predicate=lambda e: "Exported" in e.content.body
        )
        assert admin.was_encrypted(file_msg)
        content: Any = file_msg.content
        assert content.url is None and content.file is not None  # an EncryptedFile
        ciphertext = await download(admin, content.file.url)
        data = decrypt_attachment(
            ciphertext, content.file.key.key, content.file.hashes["sha256"], content.file.iv
        )
        assert b"a message for the record" not in data
        exported = [json.loads(line) for line in data.decode().splitlines()]
        assert exported and all(r["action"] == "message.sent" for r in exported)

        conn = await asyncpg.connect(db_url)
        try:
            stored = await conn.fetch(
                "SELECT seq, hash, actor, event_id FROM audit_log"
                " WHERE room_id = $1 AND action = 'message.sent' AND seq <= $2 ORDER BY seq",
                room,
                exported[-1]["seq"],
            )
        finally:
            await conn.close()
        assert [(r["seq"], r["hash"], r["actor"], r["event_id"]) for r in stored] == [
            (r["seq"], r["hash"], r["actor"], r["event_id"]) for r in exported
        ]
        assert f"Exported {len(exported)} audit row(s) of {room}" in reply.content.body

        row = (await wait_rows(db_url, "audit.exported", room_id=room))[0]
        details = json.loads(row["details"])
        assert details["rows"] == len(exported) and details["filters"]["action"] == "message.sent"
        assert details["sha256"] in reply.content.body

        # CSV of every room from the management room; then the chain is verified.
        csv_reply = await ask(admin, management, "audit export format=csv", "Exported", bot_user)
        assert "of all rooms" in csv_reply.content.body
        verified = await ask(admin, management, "audit verify", "Audit log", bot_user)
        assert "intact" in verified.content.body
        row = (await wait_rows(db_url, "audit.verified"))[0]
        assert json.loads(row["details"])["ok"] is True

        everywhere = await ask(admin, management, "audit tail 50", "audit row(s)", bot_user)
        assert "across all rooms" in everywhere.content.body and room in everywhere.content.body
        bad = await ask(admin, room, "audit export since=yesterday", "since", bot_user)
        assert "expected e.g. 2026-11-01" in bad.content.body
        assert "yesterday" not in bad.content.body  # the error never repeats the text


async def test_a_decryption_failure_is_announced_in_the_management_room(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    async with bot_with_management_room(bot_env, e2ee_user) as (bot, admin, management):
        patient = await e2ee_user("patient")
        room = await admin.create_room(invite=[bot_env.bot_user, patient.user_id])
        await patient.wait_for_membership(room, patient.user_id, "invite")
        await patient.join(room)
        await admin.wait_for_membership(room, bot_env.bot_user, "join")
        event_id, session = await send_without_bot_key(patient, room, "you may not read this")
        await send_withheld(
            patient,
            bot_env.bot_user,
            bot.app.gateway.device_id,
            room,
            session.id,
            identity_key(patient),
        )
        await wait_rows(db_url, "decryption.failed", event_id=event_id)
        alert = await admin.wait_for_message(
            management, sender=bot_env.bot_user, predicate=lambda e: event_id in e.content.body
        )
        assert "m.unverified" in alert.content.body and "you may not" not in alert.content.body


async def test_the_management_room_is_told_when_the_bots_role_could_rewrite_history(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser
) -> None:
    """The test database's role is a superuser: it could disable the audit triggers. The
    admins hear it at start, in the management room, with what to do."""
    async with bot_with_management_room(bot_env, e2ee_user) as (_, admin, management):
        warning = await admin.wait_for_message(
            management,
            sender=bot_env.bot_user,
            predicate=lambda e: "WARNING: the bot's database role" in (e.content.body or ""),
        )
        body = str(warning.content.body)
        assert "is a superuser" in body and "rewrite history" in body
        assert "database.owner_url" in body
