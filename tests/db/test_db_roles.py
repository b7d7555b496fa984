"""Database roles: the embedded Postgres's two roles, and the warnings when the bot's role
could change history (check-config, status)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from bot.__main__ import main
from bot.commands.builtin import status_command
from bot.commands.registry import Reply
from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import EmbeddedPostgres, history_risk, open_databases
from tests.db.conftest import TEST_HMAC_KEY
from tests.db.roles import split_roles


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """An empty database: the owner role must create the tables itself."""
    return empty_db_url


async def test_embedded_postgres_sets_up_both_roles(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "data")
    url = await pg.astart()
    try:
        assert pg.owner_url and pg.owner_url != url
        dbs = await open_databases(url, owner_url=pg.owner_url)
        try:
            await AuditLog(dbs.main, TEST_HMAC_KEY).append([AuditEntry("system", "bot.started")])
            assert await history_risk(dbs.main) is None
        finally:
            await dbs.close()
        bot = await asyncpg.connect(url)
        try:
            assert await bot.fetchval("SELECT current_user") == EmbeddedPostgres.ROLE
            for statement in (
                "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                "TRUNCATE audit_log",
                "TRUNCATE message_archive",
                "DELETE FROM audit_log",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await bot.execute(statement)
            assert await bot.fetchval("SELECT count(*) FROM audit_log") == 1
        finally:
            await bot.close()
    finally:
        await pg.astop()


def _config(tmp_path: Path, url: str, owner_url: str = "") -> Path:
    path = tmp_path / "config.yaml"
    data: dict[str, Any] = {
        "homeserver": {"url": "http://127.0.0.1:1"},
        "bot": {"user_id": "@chaperone:clinic.test", "password": "a-real-password-1"},
        "encryption": {"pickle_key": "pickle-key-0123456789"},
        "audit": {"hmac_key": TEST_HMAC_KEY},
        "database": {"url": url, "owner_url": owner_url},
    }
    path.write_text(yaml.safe_dump(data))
    return path


async def test_check_config_warns_when_the_role_owns_the_tables(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with split_roles(db_url) as roles:
        # The owner role as the bot's role: it owns audit_log and could disable its triggers.
        dbs = await open_databases(roles.owner_url)
        await dbs.close()
        path = _config(tmp_path, roles.owner_url)
        assert await asyncio.to_thread(main, ["check-config", "-c", str(path)]) == 0
        out = capsys.readouterr().out
        assert "WARNING: database.url: " in out and "owns audit_log" in out
        assert roles.owner_url not in out

        dbs = await open_databases(roles.app_url, owner_url=roles.owner_url)
        await dbs.close()
        path = _config(tmp_path, roles.app_url, roles.owner_url)
        assert await asyncio.to_thread(main, ["check-config", "-c", str(path)]) == 0
        assert "WARNING: database.url" not in capsys.readouterr().out


class _Status:
    async def status_lines(self) -> list[str]:
        return ["Chaperone up"]


class _Services:
    def __init__(self, role_warning: str | None) -> None:
        self.status = _Status()
        self.role_warning = role_warning


async def test_status_shows_the_role_warning() -> None:
    class Ctx:
        def __init__(self, services: object) -> None:
            self.services = services

    warned = await status_command(Ctx(_Services("the bot's role owns audit_log")), {})  # type: ignore[arg-type]
    assert plain(warned).startswith("⚠️ WARNING: the bot's role owns audit_log")
    assert plain(await status_command(Ctx(_Services(None)), {})) == "Chaperone up"  # type: ignore[arg-type]


def plain(reply: str | Reply) -> str:
    return reply.text if isinstance(reply, Reply) else reply
