"""Opening Chaperone's databases: ours, the crypto store's and the state store's, one Postgres."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from mautrix.client.state_store.asyncpg import PgStateStore
from mautrix.crypto.store.asyncpg import PgCryptoStore
from mautrix.util.async_db import Connection, Database, UpgradeTable

from .upgrade import upgrade_table as chaperone_upgrade_table

log = logging.getLogger("chaperone.db")

# Held (session-level, on a connection of its own) while migrations run, so two instances
# starting against a fresh database don't both try to create the same tables.
MIGRATION_LOCK_ID = 0x43_68_61_70_00_00_00_01

# asyncpg's default pool is 10 connections from the start; three of those would hold 30.
MAIN_POOL_MAX = 10
SIDE_POOL_MAX = 4


@dataclass(frozen=True)
class Databases:
    """The three started databases. Each keeps its own version table."""

    main: Database
    """Chaperone's tables (`chaperone_version`)."""
    crypto: Database
    """mautrix's PgCryptoStore: olm account, megolm sessions, device ID (`crypto_version`)."""
    state: Database
    """mautrix's PgStateStore: room state cache (`mx_version`)."""

    async def close(self) -> None:
        """Close all three pools, even if closing one fails (the first error is raised)."""
        errors: list[BaseException] = []
        for db in (self.state, self.crypto, self.main):
            try:
                await db.stop()
            except Exception as e:  # re-raised below, after the other pools are closed
                errors.append(e)
        if errors:
            raise errors[0]


def _db_args(role: str, max_size: int) -> dict[str, Any]:
    return {
        "min_size": 1,
        "max_size": max_size,
        "server_settings": {"application_name": f"chaperone-{role}"},
        # mautrix's default calls sys.exit(26) on an asyncpg InternalClientError, which a
        # Postgres outage can provoke; SPEC 11 wants retries with backoff instead.
        "meow_exit_on_ice": False,
    }


async def open_databases(url: str, *, main_pool_max: int = MAIN_POOL_MAX) -> Databases:
    """Connect to `url` and run every pending migration of ours, the crypto and the state store."""
    specs: list[tuple[str, UpgradeTable, int]] = [
        ("main", chaperone_upgrade_table, main_pool_max),
        ("crypto", PgCryptoStore.upgrade_table, SIDE_POOL_MAX),
        ("state", PgStateStore.upgrade_table, SIDE_POOL_MAX),
    ]
    started: list[Database] = []
    lock_conn = await asyncpg.connect(url)
    try:
        await lock_conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        for role, table, max_size in specs:
            db = Database.create(
                url,
                upgrade_table=table,
                db_args=_db_args(role, max_size),
                log=logging.getLogger(f"chaperone.db.{role}"),
            )
            await db.start()
            started.append(db)
    except BaseException:
        for db in reversed(started):
            await db.stop()
        raise
    finally:
        # Closing the session releases the advisory lock even if unlocking was never reached.
        await lock_conn.close()
    main, crypto, state = started
    return Databases(main=main, crypto=crypto, state=state)


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Connection]:
    """One transaction that every repository call inside the block joins.

    mautrix keeps the acquired connection in a context variable, so e.g.
    `async with transaction(db): await audit.append(...); await sync_state.save(...)`
    commits both or neither.
    """
    conn: Connection
    async with db.acquire() as conn, conn.transaction():
        yield conn


_CREATE_ROLE_AND_DATABASE = """
SELECT 'CREATE ROLE chaperone LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chaperone')\\gexec
SELECT 'CREATE DATABASE chaperone OWNER chaperone'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'chaperone')\\gexec
"""


class EmbeddedPostgres:
    """A Postgres server kept under the bot's data directory, for when `database.url` is empty.

    The cluster lives in `<data_dir>/postgres` and survives restarts. The bot connects as a
    plain (non-superuser) role that owns its database. `start()` blocks for a few seconds on
    first use (initdb); call it through `asyncio.to_thread` from async code.
    """

    ROLE = "chaperone"
    DATABASE = "chaperone"

    def __init__(self, data_dir: Path | str) -> None:
        self.pgdata = Path(data_dir) / "postgres"
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server, create the role and database if missing; return the URL."""
        import pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(  # type: ignore[attr-defined]  # not in its __all__
            self.pgdata, cleanup_mode="stop"
        )
        self._server = server
        # psql's \gexec runs each returned statement: a "create if missing" Postgres lacks.
        server.psql(_CREATE_ROLE_AND_DATABASE)
        url: str = server.get_postmaster_info().get_uri(user=self.ROLE, database=self.DATABASE)
        return url

    def stop(self) -> None:
        """Stop the server if this process started it; the data directory is kept."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    async def astart(self) -> str:
        """`start()` without blocking the event loop."""
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """`stop()` without blocking the event loop."""
        await asyncio.to_thread(self.stop)
