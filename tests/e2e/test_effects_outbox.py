"""Effects exactly once, against a Synapse with its default rate limits and the bot
not exempt: every violation is redacted in the end however often the homeserver says 429, a
flooded room does not hold up another room's audit, and a SIGKILL between the commit and
the effect neither loses nor repeats one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from mautrix.client import ClientAPI
from mautrix.types import Event, EventType, PaginationDirection, RoomID, SyncToken

from bot.devtools.synapse import SynapseServer
from tests.e2e.bot_env import BotEnv, BotProcess, RunningBot, base_config
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.e2e.test_retention import registered_client

VIOLATIONS = 40


async def exempt(server: SynapseServer, admin: ClientAPI, user_id: str) -> None:
    """Lift the rate limits of a test sender (never the bot's), so the flood arrives fast."""
    url = f"{server.base_url}/_synapse/admin/v1/users/{user_id}/override_ratelimit"
    headers = {"Authorization": f"Bearer {admin.api.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, json={"messages_per_second": 0, "burst_count": 0}, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()


async def rate_limited_env(
    server: SynapseServer, db_url: str, tmp_path: Path
) -> tuple[BotEnv, list[ClientAPI]]:
    """The bot (not exempt), a staff member, a patient (exempt) and a server admin."""
    bot, staff, patient = [
        await registered_client(server, name) for name in ("chaperone", "therapist", "patient")
    ]
    admin = await registered_client(server, "admin", admin=True)
    await exempt(server, admin, patient.mxid)
    config = base_config(server, db_url, tmp_path / "data", bot.mxid, "", [staff.mxid], [])
    config["bot"]["access_token"] = bot.api.token
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = BotEnv(server, tmp_path / "data", config_path, bot.mxid, ("", ""), ("", ""))
    return env, [bot, staff, patient, admin]


def admin_levels(bot: ClientAPI) -> dict[str, Any]:
    """A power-level override that makes the bot a room admin."""
    return {"users": {bot.mxid: 100}}


async def patient_room(staff: ClientAPI, patient: ClientAPI, bot: ClientAPI) -> RoomID:
    room_id = await staff.create_room(
        invitees=[patient.mxid, bot.mxid], power_level_override=admin_levels(bot)
    )
    await patient.join_room_by_id(room_id)
    return room_id


async def wait_joined(db_url: str, room_id: str) -> None:
    await wait_rows(db_url, "room.joined", room_id=room_id, timeout=30)


def consent_removals(rows: list[Any]) -> list[str]:
    return [
        json.loads(r["details"])["redacts"]
        for r in rows
        if json.loads(r["details"]).get("cause") == "policy.violation"
    ]


async def waiting_effects(db_url: str, room_id: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE room_id = $1 AND done_at IS NULL", room_id
            )
        )
    finally:
        await conn.close()


async def bot_events(client: ClientAPI, room_id: RoomID, bot: str) -> list[Any]:
    """Everything the bot sent in the room, read back from the server."""
    found: list[Any] = []
    token = None
    while True:
        page = await client.get_messages(
            room_id, direction=PaginationDirection.BACKWARD, from_token=token, limit=100
        )
        # PaginatedMessages is a keyword-form NamedTuple, whose fields mypy cannot see.
        fields = page._asdict()
        events: list[Event] = fields["events"]
        end: SyncToken | None = fields["end"]
        found += [e for e in events if e.sender == bot]
        if not events or end is None:
            return found
        token = end


async def test_every_violation_is_redacted_under_default_limits_and_no_room_waits(
    synapse_rate_limited: SynapseServer, db_url: str, tmp_path: Path
) -> None:
    env, (bot_api, staff, patient, admin) = await rate_limited_env(
        synapse_rate_limited, db_url, tmp_path
    )
    running = await RunningBot(env.config).start()
    try:
        flooded = await patient_room(staff, patient, bot_api)
        quiet = await staff.create_room(
            invitees=[bot_api.mxid], power_level_override=admin_levels(bot_api)
        )
        await wait_joined(db_url, flooded)
        await wait_joined(db_url, quiet)
        sent = [await patient.send_text(flooded, f"before consent {i}") for i in range(VIOLATIONS)]
        await wait_rows(db_url, "policy.violation", VIOLATIONS, timeout=60, room_id=flooded)

        # The flood's redactions wait out 429s in the outbox; the other room is audited now.
        elsewhere = await staff.send_text(quiet, "a message in another room")
        assert len(await wait_rows(db_url, "message.sent", event_id=elsewhere, timeout=10)) == 1
        assert await waiting_effects(db_url, flooded) > 0

        rows = await wait_rows(
            db_url, "message.redacted", VIOLATIONS, timeout=400, room_id=flooded
        )
        assert sorted(consent_removals(rows)) == sorted(sent)
        for event_id in sent:  # what every member now sees: the content is gone
            assert (await staff.get_event(flooded, event_id)).content.serialize() == {}
        assert await waiting_effects(db_url, flooded) == 0
        assert (
            "paced by the homeserver's rate limit"
            not in await running.app.parts.outbox.status_line()
        )
    finally:
        await running.stop()
        for api in (bot_api, staff, patient, admin):
            await api.api.session.close()


async def test_sigkill_between_commit_and_effect_neither_loses_nor_repeats_one(
    synapse_rate_limited: SynapseServer, db_url: str, tmp_path: Path
) -> None:
    env, (bot_api, staff, patient, admin) = await rate_limited_env(
        synapse_rate_limited, db_url, tmp_path
    )
    proc = BotProcess(env.config_path, tmp_path / "bot.log")
    proc.start()
    try:
        await wait_rows(db_url, "bot.started", timeout=30)
        room = await patient_room(staff, patient, bot_api)
        await wait_joined(db_url, room)
        sent = [await patient.send_text(room, f"before consent {i}") for i in range(16)]
        await wait_rows(db_url, "policy.violation", len(sent), timeout=60, room_id=room)
        # Decided and committed, some not carried out yet (the bot waits out a 429): kill.
        while await waiting_effects(db_url, room) == 0:
            await asyncio.sleep(0.05)
        assert len(await audit_rows(db_url, "message.redacted", room_id=room)) < len(sent)
        proc.kill()

        proc.start()
        rows = await wait_rows(db_url, "message.redacted", len(sent), timeout=180, room_id=room)
        assert sorted(consent_removals(rows)) == sorted(sent)
        await asyncio.sleep(1)  # anything repeated would be in the room by now
        events = await bot_events(staff, room, bot_api.mxid)
        redactions = [str(e.redacts) for e in events if e.type == EventType.ROOM_REDACTION]
        assert sorted(redactions) == sorted(sent)  # each exactly once
        removed_notices = [
            e
            for e in events
            if e.type == EventType.ROOM_MESSAGE and "your message was removed" in e.content.body
        ]
        assert len(removed_notices) == 1
        assert len(await audit_rows(db_url, "message.redacted", room_id=room)) == len(sent)
    finally:
        proc.cleanup()
        for api in (bot_api, staff, patient, admin):
            await api.api.session.close()


async def test_with_an_admin_token_the_bot_lifts_its_own_rate_limits(
    synapse_rate_limited: SynapseServer, db_url: str, tmp_path: Path
) -> None:
    env, (bot_api, staff, patient, admin) = await rate_limited_env(
        synapse_rate_limited, db_url, tmp_path
    )
    env.write_config(homeserver__admin_token=admin.api.token)
    running = await RunningBot(env.config).start()
    url = (
        f"{synapse_rate_limited.base_url}/_synapse/admin/v1/users/{bot_api.mxid}"
        "/override_ratelimit"
    )
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {admin.api.token}"}
            async with session.get(url, headers=headers) as resp:
                assert await resp.json() == {"messages_per_second": 0, "burst_count": 0}
    finally:
        await running.stop()
        for api in (bot_api, staff, patient, admin):
            await api.api.session.close()
