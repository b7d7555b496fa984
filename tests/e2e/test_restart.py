"""Restarts: the same device afterwards, and nothing lost or doubled after a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os

import asyncpg
import pytest

from tests.e2e.bot_env import BotEnv, BotProcess, RunningBot
from tests.e2e.test_foundation import staffed_room, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


async def test_restart_keeps_device_and_decrypts_new_messages(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    bot = await RunningBot(bot_env.config).start()
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, bot)
    first_device = bot.app.gateway.device_id
    await bot.stop()

    bot = await RunningBot(bot_env.config).start()
    try:
        assert bot.app.gateway.device_id == first_device
        event_id = await patient.send_text(room_id, "after the restart")
        rows = await wait_rows(db_url, "message.sent", event_id=event_id)
        assert len(rows) == 1
        await patient.send_text(room_id, "!chaperone help")
        reply = await patient.wait_for_message(  # (the consent terms were posted first)
            room_id,
            sender=bot_env.bot_user,
            predicate=lambda e: "Commands you can use" in e.content.body,
        )
        assert "help" in reply.content.body
    finally:
        await bot.stop()
    started = await wait_rows(db_url, "bot.started", count=2)
    assert {r["details"] for r in started} and len(started) == 2


async def test_sigkill_while_messages_arrive_loses_nothing_and_doubles_nothing(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    proc = BotProcess(bot_env.config_path, bot_env.data_dir.parent / "bot.log")
    proc.start()
    try:
        await wait_rows(db_url, "bot.started", timeout=30)
        staff = await e2ee_user(credentials=bot_env.staff)
        patient = await e2ee_user("patient")
        room_id = await staff.create_room(invite=[bot_env.bot_user, patient.user_id])
        await patient.wait_for_membership(room_id, patient.user_id, "invite")
        await patient.join(room_id)
        await staff.wait_for_membership(room_id, bot_env.bot_user, "join", timeout=30)

        sent = []
        for i in range(30):
            sent.append(await patient.send_text(room_id, f"message {i}"))
            if i == 12:
                proc.kill()  # mid-stream, no chance to flush anything
        proc.start()
        for i in range(30, 35):
            sent.append(await patient.send_text(room_id, f"message {i}"))

        rows = await wait_rows(
            db_url, "message.sent", count=len(sent), timeout=60, actor=patient.user_id
        )
        audited = [r["event_id"] for r in rows]
        assert sorted(audited) == sorted(sent)  # every message, each exactly once
        assert proc.terminate() == 0
    finally:
        proc.cleanup()
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pending_decryption") == 0
        # Replay protection kept up: each message's megolm index is recorded, once, for it
        # (the bot writes them with the batch's audit rows).
        indexed = await conn.fetchval(
            "SELECT count(DISTINCT event_id) FROM crypto_message_index WHERE event_id = ANY($1)",
            sent,
        )
        assert indexed == len(sent)
    finally:
        await conn.close()
    assert os.path.exists(bot_env.data_dir / "recovery-key.txt")


async def test_messages_sent_while_down_are_paged_back_from_a_limited_timeline(
    bot_env: BotEnv,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import bot.matrix.gateway as gateway

    caplog.set_level("INFO", logger="chaperone")
    monkeypatch.setattr(gateway, "TIMELINE_LIMIT", 3)  # so 15 missed messages arrive limited
    bot = await RunningBot(bot_env.config).start()
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, bot)
    await bot.stop()

    sent = [await patient.send_text(room_id, f"while you were away {i}") for i in range(15)]
    bot = await RunningBot(bot_env.config).start()
    try:
        rows = await wait_rows(db_url, "message.sent", count=15, actor=patient.user_id)
        assert sorted(r["event_id"] for r in rows) == sorted(sent)
        assert any("Back-filled" in r.getMessage() for r in caplog.records)
    finally:
        await bot.stop()


async def test_a_second_instance_stands_by_and_takes_over(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    first = await RunningBot(bot_env.config).start()
    second = RunningBot(bot_env.config)
    standby = asyncio.create_task(second.start(timeout=60))
    try:
        await asyncio.sleep(2)
        assert not standby.done()  # waiting for the lock, not syncing
        assert len(await wait_rows(db_url, "bot.started", timeout=0.1)) == 1
        await first.stop()
        await standby  # took over
        staff, patient, room_id = await staffed_room(bot_env, e2ee_user, second)
        event_id = await patient.send_text(room_id, "handled by the second instance")
        assert len(await wait_rows(db_url, "message.sent", event_id=event_id)) == 1
    finally:
        await second.stop()


async def test_start_waits_for_an_unreachable_homeserver_then_carries_on(
    bot_env: BotEnv, db_url: str
) -> None:
    import socket

    from aiohttp import ClientSession, web

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bot_env.write_config(homeserver__url=f"http://127.0.0.1:{port}")
    bot = RunningBot(bot_env.config)
    starting = asyncio.create_task(bot.start(timeout=60))
    try:
        for _ in range(100):
            if "homeserver" in bot.app.web.waiting_reason:
                break
            await asyncio.sleep(0.05)
        assert "waiting for the homeserver" in bot.app.web.waiting_reason
        assert not starting.done()

        # The homeserver "comes back": a plain proxy to the real one on the configured port.
        upstream = bot_env.synapse.base_url
        FORWARDED = {"Authorization", "Content-Type"}
        session = ClientSession()

        async def proxy(request: web.Request) -> web.Response:
            async with session.request(
                request.method,
                upstream + request.path_qs,
                headers={k: v for k, v in request.headers.items() if k in FORWARDED},
                data=await request.read(),
            ) as resp:
                return web.Response(
                    status=resp.status,
                    body=await resp.read(),
                    content_type=resp.content_type,
                )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy)
        runner = web.AppRunner(app, shutdown_timeout=0.5)  # a long-poll may be in flight
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await starting  # the first sync gets processed
            assert len(await wait_rows(db_url, "bot.started")) == 1
        finally:
            await bot.stop()
            await runner.cleanup()
            await session.close()
    finally:
        starting.cancel()


async def test_a_message_redacted_before_the_bot_read_it_is_recorded_not_failed(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    bot = await RunningBot(bot_env.config).start()
    staff, patient, room_id = await staffed_room(bot_env, e2ee_user, bot)
    await bot.stop()
    event_id = await patient.send_text(room_id, "sent and taken back while the bot was away")
    await patient.redact(room_id, event_id)
    bot = await RunningBot(bot_env.config).start()
    try:
        rows = await wait_rows(db_url, "message.sent", event_id=event_id)
        assert len(rows) == 1 and json.loads(rows[0]["details"])["redacted_before_read"] is True
        assert await wait_rows(db_url, "decryption.failed", timeout=0.5) == []
    finally:
        await bot.stop()
