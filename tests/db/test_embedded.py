"""The embedded Postgres used when database.url is empty."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import EmbeddedPostgres, open_databases


async def test_embedded_postgres_keeps_data_across_restarts(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "data")
    url = await pg.astart()
    try:
        dbs = await open_databases(url, owner_url=pg.owner_url)
        try:
            await AuditLog(dbs.main, "embedded-test-hmac-key").append(
                [AuditEntry("system", "bot.started")]
            )
            superuser = await dbs.main.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            assert superuser is False  # the bot never runs as a superuser
        finally:
            await dbs.close()
    finally:
        await pg.astop()
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()

    again = EmbeddedPostgres(tmp_path / "data")
    url = await again.astart()
    try:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1
        finally:
            await conn.close()
    finally:
        await again.astop()
