"""Pool connections are handed back without asyncpg's reset query (a round trip per release),
and still come back clean: a transaction left open is rolled back before anyone reuses it."""

from __future__ import annotations

from typing import cast

from mautrix.util.async_db.asyncpg import PostgresDatabase

from bot.db.database import open_main_database


async def test_a_released_connection_is_reused_clean_without_the_reset_query(
    db_url: str,
) -> None:
    main = await open_main_database(db_url)
    try:
        pool = cast(PostgresDatabase, main).pool
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("BEGIN")  # left open: a bug elsewhere, not to leak
            await conn.execute("INSERT INTO staff VALUES ('@x:y', 'test', now())")
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same session, reused
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM staff") == 0
            # The reset query (RESET ALL among others) did not run: a setting survives.
            await conn.execute("SET work_mem = '7MB'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == "7MB"
    finally:
        await main.stop()
