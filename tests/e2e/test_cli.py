"""The CLI against a real database: audit verify / export, check-config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import open_databases
from tests.e2e.bot_env import HMAC_KEY, BotEnv


def chaperone(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
async def thirty_rows(db_url: str) -> None:
    dbs = await open_databases(db_url)
    try:
        await AuditLog(dbs.main, HMAC_KEY).append(
            [
                AuditEntry(
                    actor=f"@u{i % 3}:localhost",
                    action="message.sent" if i % 2 else "member.joined",
                    room_id="!r:localhost",
                    event_id=f"$e{i}",
                    details={"n": i},
                )
                for i in range(30)
            ]
        )
    finally:
        await dbs.close()


async def test_append_only_and_verify_names_the_tampered_row(
    bot_env: BotEnv, db_url: str, thirty_rows: None
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        for statement in (
            "UPDATE audit_log SET actor = 'x' WHERE seq = 3",
            "DELETE FROM audit_log WHERE seq = 3",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 30
    finally:
        await conn.close()

    ok = chaperone("audit", "verify", "-c", str(bot_env.config_path))
    assert ok.returncode == 0, ok.stderr
    assert "30 rows" in ok.stdout
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow("SELECT * FROM audit_log WHERE action = 'audit.verified'")
    finally:
        await conn.close()
    assert row["actor"].startswith("cli:") and json.loads(row["details"])["ok"] is True

    conn = await asyncpg.connect(db_url)  # a superuser, who can get past the trigger
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("""UPDATE audit_log SET details = '{"n": 99}' WHERE seq = 17""")
    finally:
        await conn.close()
    broken = chaperone("audit", "verify", "-c", str(bot_env.config_path))
    assert broken.returncode == 1
    assert "seq 17" in broken.stderr


async def test_export_filters_as_jsonl_and_csv(
    bot_env: BotEnv, db_url: str, thirty_rows: None
) -> None:
    out = chaperone(
        "audit",
        "export",
        "-c",
        str(bot_env.config_path),
        "action=message.sent",
        "user=@u1:localhost",
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["event_id"] for r in rows] == [f"$e{i}" for i in range(30) if i % 2 and i % 3 == 1]
    csv_out = chaperone(
        "audit",
        "export",
        "-c",
        str(bot_env.config_path),
        "--format",
        "csv",
        "action=member.joined",
    )
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0].startswith("seq,") and len(lines) == 1 + 15

    bad = chaperone("audit", "export", "-c", str(bot_env.config_path), "since=yesterday")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "since" in bad.stderr


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "homeserver: {url: 'ftp://x'}\n"
        "bot: {user_id: 'chaperone', password: 'CHANGE_ME', comand_prefix: '!c'}\n"
        "encryption: {pickle_key: 'short-but-real-key-123'}\n"
        "audit: {hmac_key: 'tooshort'}\n"
        "defaults: {enforcement: 'shout', retention: '5x'}\n"
    )
    result = chaperone("check-config", "-c", str(path))
    assert result.returncode == 2
    for key in (
        "homeserver.url",
        "bot.user_id",
        "bot.password",
        "bot.comand_prefix",
        "audit.hmac_key",
        "defaults.enforcement",
        "defaults.retention",
    ):
        assert key in result.stderr, key
    assert "CHANGE_ME" not in result.stderr and "tooshort" not in result.stderr


def test_check_config_accepts_a_valid_config(bot_env: BotEnv) -> None:
    result = chaperone("check-config", "-c", str(bot_env.config_path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
