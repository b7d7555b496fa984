"""HTTP endpoints of a running bot: health, readiness (with Postgres taken away and given back),
Prometheus metrics, and the token-protected audit API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from tests.e2e.bot_env import API_TOKEN, BotEnv, RunningBot
from tests.e2e.test_foundation import staffed_room, wait_rows
from tests.fixtures_synapse import MakeE2EEUser

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def base(bot: RunningBot) -> str:
    return f"http://127.0.0.1:{bot.app.web.port}"


async def get(bot: RunningBot, path: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(base(bot) + path, **kwargs) as r:
        return r.status, await r.text()


def events_processed(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "chaperone_events_processed":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("chaperone_events_processed missing")


async def test_health_metrics_and_the_audit_api(
    bot_env: BotEnv, running_bot: RunningBot, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    assert await get(running_bot, "/health") == (200, '{"ok": true}')
    status, body = await get(running_bot, "/ready")
    assert status == 200, body

    status, before = await get(running_bot, "/metrics")
    assert status == 200
    families = {f.name for f in text_string_to_metric_families(before)}
    assert {"chaperone_events_processed", "chaperone_sync_lag_seconds"} <= families
    staff, patient, room = await staffed_room(bot_env, e2ee_user, running_bot)
    event_id = await patient.send_text(room, "counted, never shown")
    await wait_rows(db_url, "message.sent", event_id=event_id)
    _, after = await get(running_bot, "/metrics")
    assert events_processed(after) > events_processed(before)

    attempts: tuple[tuple[dict[str, str], str], ...] = (
        ({}, "missing token"),
        ({"Authorization": "Bearer not-the-token"}, "wrong token"),
        ({"Authorization": f"Basic {API_TOKEN}"}, "missing token"),
    )
    for headers, _ in attempts:
        status, body = await get(running_bot, "/api/v1/audit", headers=headers)
        assert status == 401 and "token" in json.loads(body)["error"]
    for _ in range(20):  # hammering: refused every time, recorded once a minute
        status, _ = await get(running_bot, "/api/v1/audit", headers=attempts[1][0])
        assert status == 401
    refused = await wait_rows(db_url, "http.unauthorized", count=2)
    # one row per address and reason per minute: the repeated "missing token" adds none
    assert [json.loads(r["details"])["reason"] for r in refused] == [
        "missing token",
        "wrong token",
    ]
    assert all(API_TOKEN not in r["details"] for r in refused)

    status, body = await get(running_bot, "/api/v1/audit", headers=AUTH)
    assert status == 200
    rows = [json.loads(line) for line in body.splitlines()]
    assert {"bot.started", "message.sent", "http.unauthorized"} <= {r["action"] for r in rows}
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)

    query = {"action": "message.sent", "room": room}
    status, body = await get(running_bot, "/api/v1/audit", headers=AUTH, params=query)
    only = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and event_id in {r["event_id"] for r in only}
    assert {(r["action"], r["room_id"]) for r in only} == {("message.sent", room)}
    assert "counted, never shown" not in body

    status, body = await get(running_bot, "/api/v1/audit", headers=AUTH, params={"since": "x"})
    assert status == 400 and "since" in json.loads(body)["error"]
    status, body = await get(running_bot, "/api/v1/audit", headers=AUTH, params={"colour": "1"})
    assert status == 400 and "colour" in json.loads(body)["error"]

    status, body = await get(running_bot, "/api/v1/audit/verify", headers=AUTH)
    result = json.loads(body)
    assert status == 200 and result["ok"] is True and result["rows"] > len(only)
    # Each export is recorded as it starts and again when it ends (complete, with its count).
    exported = [
        json.loads(r["details"]) for r in await wait_rows(db_url, "audit.exported", count=4)
    ]
    assert [(d["stage"], d["complete"]) for d in exported] == [
        ("started", False),
        ("finished", True),
    ] * 2
    assert exported[3]["filters"] == query and exported[3]["rows"] == len(only)


async def _set_connections(pg_server_url: str, database: str, allowed: bool) -> None:
    conn = await asyncpg.connect(pg_server_url)
    try:
        await conn.execute(
            f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}'
        )
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await conn.close()


async def wait_ready(bot: RunningBot, status: int, timeout: float = 30) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got, body = await get(bot, "/ready")
        if got == status or asyncio.get_running_loop().time() > deadline:
            assert got == status, body
            return body
        await asyncio.sleep(0.2)


async def test_ready_is_503_while_postgres_is_unreachable_and_200_after(
    running_bot: RunningBot, db_url: str, pg_server_url: str
) -> None:
    await wait_ready(running_bot, 200)
    database = URL(db_url).path.lstrip("/")
    await _set_connections(pg_server_url, database, allowed=False)
    try:
        body = await wait_ready(running_bot, 503)
        assert "postgres unreachable" in json.loads(body)["reason"]
        assert (await get(running_bot, "/health"))[0] == 200
    finally:
        await _set_connections(pg_server_url, database, allowed=True)
    await wait_ready(running_bot, 200)
