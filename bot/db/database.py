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
    settings = {"application_name": f"chaperone-{role}"}
    if role == "state":
        # mautrix's state store (a cache of the homeserver's room state) writes one event per
        # statement; not waiting for each one's WAL flush makes a first sync of 1,000 rooms
        # seconds faster. Nothing is lost against the sync position: the batch's durable
        # commit, which saves that position, flushes all WAL before it. Chaperone's own
        # tables and the crypto store keep waiting.
        settings["synchronous_commit"] = "off"
    return {
        # No floor: while Postgres is down asyncpg would try (and log) refilling it each time.
        "min_size": 0,
        "max_size": max_size,
        "server_settings": settings,
        # mautrix's default calls sys.exit(26) on an asyncpg InternalClientError, which a
        # Postgres outage can provoke; the bot retries with backoff instead of exiting.
        "meow_exit_on_ice": False,
        "reset": _keep_session,
    }


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released pool connection keeps its session: asyncpg still rolls back a transaction
    left open, and nothing else needs undoing (no session advisory locks, LISTEN, SET or
    cursors outside a transaction on pool connections; the leader and migration locks have
    connections of their own), so the reset query's round trip on each release is saved."""


def _upgrade_tables(main_pool_max: int) -> list[tuple[str, UpgradeTable, int]]:
    # Imported here: the audit and archive commands open only the main database and start
    # without mautrix's crypto and client modules (a third of a second of imports).
    from mautrix.client.state_store.asyncpg import PgStateStore
    from mautrix.crypto.store.asyncpg import PgCryptoStore

    return [
        ("main", chaperone_upgrade_table, main_pool_max),
        ("crypto", PgCryptoStore.upgrade_table, SIDE_POOL_MAX),
        ("state", PgStateStore.upgrade_table, SIDE_POOL_MAX),
    ]


async def open_databases(
    url: str, *, owner_url: str | None = None, main_pool_max: int = MAIN_POOL_MAX
) -> Databases:
    """Connect to `url` and run every pending migration of ours, the crypto and the state store.

    With `owner_url` (`database.owner_url`) the migrations run through that role, which owns the
    tables, and `url`'s role is granted only what the bot needs (`apply_grants`).
    """
    main, crypto, state = await _open(url, owner_url, _upgrade_tables(main_pool_max))
    return Databases(main=main, crypto=crypto, state=state)


async def open_main_database(url: str, *, owner_url: str | None = None) -> Database:
    """Chaperone's own tables only (migrated as `open_databases` does), for the commands that
    read or write the audit log and the archive and never touch Matrix."""
    [main] = await _open(url, owner_url, [("main", chaperone_upgrade_table, SIDE_POOL_MAX)])
    return main


async def _open(
    url: str, owner_url: str | None, tables: list[tuple[str, UpgradeTable, int]]
) -> list[Database]:
    if owner_url:
        await migrate_as_owner(owner_url, await role_of(url))
    started: list[Database] = []
    lock_conn = await asyncpg.connect(url)
    try:
        await lock_conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        for role, table, max_size in tables:
            db = Database.create(
                url,
                # The runtime role may not create tables: the owner step migrated already.
                upgrade_table=None if owner_url else table,
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
    return started


async def role_of(url: str) -> str:
    """The role a connection to `url` runs as."""
    conn = await asyncpg.connect(url)
    try:
        role: str = await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()
    return role


async def migrate_as_owner(owner_url: str, runtime_role: str) -> None:
    """Run every pending migration through the owner role, then grant `runtime_role` its share."""
    lock_conn = await asyncpg.connect(owner_url)
    try:
        await lock_conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        for role, table, _ in _upgrade_tables(1):
            db = Database.create(
                owner_url,
                upgrade_table=table,
                db_args=_db_args(f"{role}-owner", 1),
                log=logging.getLogger(f"chaperone.db.{role}"),
            )
            try:
                await db.start()
            finally:
                await db.stop()
        owner: str = await lock_conn.fetchval("SELECT current_user")
        if owner != runtime_role:
            async with lock_conn.transaction():
                await apply_grants(lock_conn, runtime_role)
    finally:
        await lock_conn.close()


HISTORY_TABLES = ("audit_log", "consent", "message_archive")
"""Tables holding the record: the runtime role may only read and add rows to them."""

# What the runtime role may change in a consent row: revocation, renewal request, expiry
# (bot.db.consent); the consent_keep trigger limits these further.
CONSENT_UPDATABLE = (
    "revoked_at",
    "revoked_by",
    "revoke_event_id",
    "reasked_at",
    "expiry_recorded_at",
)

READ_ONLY_TABLES = ("audit_chain_meta",)


async def _execute_formatted(conn: asyncpg.Connection, template: str, *idents: str) -> None:
    # GRANT takes no bind parameters: Postgres's own format() quotes each identifier (%I).
    statement: str = await conn.fetchval(
        f"SELECT format($1, {', '.join(f'${i + 2}::text' for i in range(len(idents)))})",
        template,
        *idents,
    )
    await conn.execute(statement)


async def apply_grants(conn: asyncpg.Connection, runtime_role: str) -> None:
    """Give `runtime_role` what the bot needs, and no more, on every table (run by the owner).

    Idempotent and run at every start, so tables added by later migrations are covered: full
    DML on ordinary tables, SELECT and INSERT on `HISTORY_TABLES` (plus the consent columns a
    revocation, renewal or expiry sets), SELECT on `READ_ONLY_TABLES`, sequences usable.
    Ownership stays with the owner, so the runtime role can neither disable the triggers nor
    TRUNCATE.
    """
    schema: str = await conn.fetchval("SELECT current_schema()")
    grant = _execute_formatted
    await grant(conn, "GRANT USAGE ON SCHEMA %I TO %I", schema, runtime_role)
    await grant(
        conn,
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I",
        schema,
        runtime_role,
    )
    await grant(
        conn, "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I", schema, runtime_role
    )
    for table in HISTORY_TABLES + READ_ONLY_TABLES:
        await grant(
            conn,
            "REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON %I.%I FROM %I",
            schema,
            table,
            runtime_role,
        )
    for table in READ_ONLY_TABLES:
        await grant(conn, "REVOKE INSERT ON %I.%I FROM %I", schema, table, runtime_role)
    columns = ", ".join(f'"{c}"' for c in CONSENT_UPDATABLE)  # constant names
    await grant(conn, f"GRANT UPDATE ({columns}) ON %I.consent TO %I", schema, runtime_role)


async def history_risk(conn: Connection | asyncpg.Connection) -> str | None:
    """Why the connection's role could change history (superuser, owner of the record), or None."""
    row = await conn.fetchrow(
        """
        SELECT current_user AS role,
               (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
               ARRAY(
                   SELECT c.relname::text FROM pg_class c
                   WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'
                     AND c.relnamespace = current_schema()::regnamespace
                     AND pg_has_role(current_user, c.relowner, 'MEMBER')
                   ORDER BY c.relname
               ) AS owned
        """,
        list(HISTORY_TABLES),
    )
    assert row is not None
    if row["superuser"]:
        what = "is a superuser"
    elif row["owned"]:
        what = "owns " + ", ".join(row["owned"])
    else:
        return None
    return (
        f"the bot's database role {row['role']} {what}, so it could disable the audit "
        "triggers and rewrite history; set database.owner_url to a role that owns the tables "
        "and run the bot as a role without those rights (docs/operations.md: Database roles)"
    )


async def history_risk_of(url: str, *, timeout: float = 10.0) -> str | None:
    """`history_risk` for a connection to `url` (raises OSError/asyncpg errors if unreachable)."""
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        return await history_risk(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Connection]:
    """One transaction that every repository call inside the block joins.

    mautrix keeps the acquired connection in a context variable, so e.g.
    `async with transaction(db): await audit.append(...); await sync_state.save(...)`
    commits both or neither (`bot.mautrix_compat.connection.current_connection` reads it;
    `tests/unit/test_mautrix_compat.py` checks `Database.acquire` still joins it).
    """
    conn: Connection
    async with db.acquire() as conn, conn.transaction():
        yield conn


# Two roles: chaperone_owner owns the database and its tables (migrations run as it), the bot
# runs as chaperone, granted only what it needs. A cluster from before the split had chaperone
# own everything: REASSIGN OWNED hands that to chaperone_owner (a no-op once done).
_CREATE_ROLES_AND_DATABASE = """
\\set ON_ERROR_STOP on
SELECT 'CREATE ROLE chaperone_owner LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chaperone_owner')\\gexec
SELECT 'CREATE ROLE chaperone LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chaperone')\\gexec
SELECT 'CREATE DATABASE chaperone OWNER chaperone_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'chaperone')\\gexec
ALTER DATABASE chaperone OWNER TO chaperone_owner;
\\c chaperone
REASSIGN OWNED BY chaperone TO chaperone_owner;
"""


PGSERVER_MISSING = (
    "database.url is empty, so the bot would run an embedded Postgres, but pgserver is not "
    "installed: pip install 'matrix-chaperone[demo]' (or set database.url)"
)
"""One line for when the embedded Postgres is wanted but its package is not installed."""


class EmbeddedPostgresUnavailable(RuntimeError):
    """The embedded Postgres needs `pgserver` (the `demo` extra), which is not installed."""


class EmbeddedPostgres:
    """A Postgres server kept under the bot's data directory, for when `database.url` is empty.

    The cluster lives in `<data_dir>/postgres` and survives restarts. The bot connects as a
    plain (non-superuser) role; migrations run as `OWNER_ROLE` (`owner_url`), which owns the
    database and its tables. `start()` blocks for a few seconds on first use (initdb); call it
    through `asyncio.to_thread` from async code.
    """

    ROLE = "chaperone"
    OWNER_ROLE = "chaperone_owner"
    DATABASE = "chaperone"

    def __init__(self, data_dir: Path | str) -> None:
        self.pgdata = Path(data_dir) / "postgres"
        self._server: Any = None
        self.owner_url = ""
        """The owner role's URL, set by `start()`."""

    def start(self) -> str:
        """Start (or reuse) the server, create both roles and the database if missing; return
        the bot's URL (the owner's is in `owner_url`)."""
        try:
            import pgserver
        except ImportError:  # production images leave it out (the `demo` extra)
            raise EmbeddedPostgresUnavailable(PGSERVER_MISSING) from None

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(  # type: ignore[attr-defined]  # not in its __all__
            self.pgdata, cleanup_mode="stop"
        )
        self._server = server
        # psql's \gexec runs each returned statement: a "create if missing" Postgres lacks.
        server.psql(_CREATE_ROLES_AND_DATABASE)
        info = server.get_postmaster_info()
        self.owner_url = info.get_uri(user=self.OWNER_ROLE, database=self.DATABASE)
        url: str = info.get_uri(user=self.ROLE, database=self.DATABASE)
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


async def role_warning_of(url: str) -> str | None:
    """`history_risk` for check-config: a line saying why it could not be checked, if so."""
    try:
        return await history_risk_of(url)
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        # The exception's text may echo the URL; its class name cannot.
        return f"could not connect to check the bot's database role ({type(e).__name__})"
