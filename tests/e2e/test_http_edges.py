"""HTTP and CLI edges (issue 9 item 8): a token that is not UTF-8 is refused and audited like
any bad token, and an export cut short — the client gone mid-stream, `| head` on the CLI —
is on the record all the same. Real Postgres, a real bot, raw sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import open_databases
from tests.e2e.bot_env import API_TOKEN, HMAC_KEY, BotEnv, RunningBot
from tests.e2e.test_foundation import audit_rows, wait_rows

ROWS = 4_000
PAD = "x" * 2_000  # ~2 kB a row: 8 MB of export, far more than any socket or pipe buffer


@pytest.fixture
async def many_rows(db_url: str) -> None:
    dbs = await open_databases(db_url)
    try:
        await AuditLog(dbs.main, HMAC_KEY).append(
            [
                AuditEntry(
                    actor="@u:localhost",
                    action="member.joined",
                    room_id="!r:localhost",
                    event_id=f"$bulk{i}",
                    details={"n": i, "pad": PAD},
                )
                for i in range(ROWS)
            ]
        )
    finally:
        await dbs.close()


async def raw_get(port: int, path: str, headers: bytes) -> tuple[int, bytes]:
    """A GET with header bytes no HTTP client library would send; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: close\r\n" + headers + b"\r\n"
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def details(row: Any) -> dict[str, Any]:
    return dict(json.loads(row["details"]))


async def test_a_token_that_is_not_utf8_is_refused_and_audited(
    running_bot: RunningBot, db_url: str
) -> None:
    port = running_bot.app.web.port
    assert port is not None
    for value in (b"Bearer \xff\xfe\xc3\x28", b"Bearer " + API_TOKEN.encode() + b"\xe9"):
        status, body = await raw_get(port, "/api/v1/audit", b"Authorization: " + value + b"\r\n")
        assert status == 401, body
        assert b"bearer token" in body
    # Both refusals within the minute: one row, as for any other reason.
    [refused] = await wait_rows(db_url, "http.unauthorized")
    assert details(refused)["reason"] == "malformed token"
    assert details(refused)["path"] == "/api/v1/audit"
    status, _ = await raw_get(
        port, "/api/v1/audit/verify", b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
    )
    assert status == 200  # and the server is none the worse for it


async def test_an_export_whose_client_leaves_after_the_first_chunk_is_recorded(
    running_bot: RunningBot, db_url: str, many_rows: None
) -> None:
    port = running_bot.app.web.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/audit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n\r\n"
    )
    await writer.drain()
    received = b""
    while len(received) < 100_000:  # the headers and the first 64 kB chunk
        received += await asyncio.wait_for(reader.read(65_536), 15)
    assert received.startswith(b"HTTP/1.1 200")
    writer.transport.abort()  # gone, mid-stream: a reset, not a clean close

    started, cut = await wait_rows(db_url, "audit.exported", count=2)
    assert details(started) | {"remote": "?"} == {
        "filters": {},
        "format": "jsonl",
        "complete": False,
        "stage": "started",
        "via": "http",
        "remote": "?",
    }
    outcome = details(cut)
    assert outcome["complete"] is False and outcome["stage"] == "cut short"
    assert outcome["reason"] == "client disconnected"
    assert outcome["started_seq"] == started["seq"]
    assert 0 < outcome["rows_sent"] < ROWS
    assert "rows" not in outcome  # only a finished export states its row count


async def test_a_finished_export_is_recorded_twice_the_second_with_its_count(
    running_bot: RunningBot, db_url: str
) -> None:
    url = f"http://127.0.0.1:{running_bot.app.web.port}/api/v1/audit"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=auth) as response:
        assert response.status == 200
        body = await response.read()
    started, finished = await wait_rows(db_url, "audit.exported", count=2)
    assert (details(started)["complete"], details(finished)["complete"]) == (False, True)
    assert details(finished)["started_seq"] == started["seq"]
    seqs = [json.loads(line)["seq"] for line in body.splitlines()]
    assert details(finished)["rows"] == len(seqs) > 0
    # The export read its snapshot before recording that it started: its own row is not in it.
    assert started["seq"] not in seqs


async def test_cli_export_into_head_is_recorded_and_ends_without_a_traceback(
    bot_env: BotEnv, db_url: str, many_rows: None
) -> None:
    command = (
        f"set -o pipefail; {sys.executable} -m bot audit export -c {bot_env.config_path} | head -1"
    )
    result = await asyncio.to_thread(
        subprocess.run, ["bash", "-c", command], capture_output=True, text=True, timeout=120
    )
    assert len(result.stdout.splitlines()) == 1
    assert json.loads(result.stdout)["action"] == "member.joined"
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "cut short" in result.stderr
    assert result.returncode == 1

    rows = await audit_rows(db_url, "audit.exported")
    assert [(details(r)["stage"], details(r)["complete"]) for r in rows] == [
        ("started", False),
        ("cut short", False),
    ]
    assert rows[0]["actor"].startswith("cli:")
    assert details(rows[1])["reason"] == "output closed"
    assert details(rows[1])["started_seq"] == rows[0]["seq"]
