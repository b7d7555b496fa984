"""docker/postgres/init-databases.sh on a real, empty Postgres (as the postgres image runs it),
then the bot's migrations through the two roles it made: the runtime role must not be able to
change history, and Synapse gets its own database with C collation."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from mautrix.util.async_db import Connection

from tests.deploy.conftest import DOCKER

PASSWORDS = {
    "chaperone_owner_db_password": "owner-test-only-3kQ9",
    "chaperone_db_password": "bot-test-only-7mW2",
    "synapse_db_password": "synapse-test-only-5tR8",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Path, int]]:
    """A brand-new cluster of its own: the script creates cluster-wide roles."""
    from pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="chaperone-initdb-") as data_dir:
        server = get_server(data_dir, cleanup_mode="stop")
        info = server.get_postmaster_info()
        try:
            yield Path(info.socket_dir), int(info.port)
        finally:
            server.cleanup()


def url(role: str, database: str, socket_dir: Path) -> str:
    return f"postgresql://{role}@/{database}?host={quote(str(socket_dir))}"


@pytest.fixture(scope="module")
def initialised(cluster: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pgserver._commands

    socket_dir, port = cluster
    secrets = tmp_path_factory.mktemp("secrets")
    for name, value in PASSWORDS.items():
        (secrets / name).write_text(value + "\n", encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{pgserver._commands.POSTGRES_BIN_PATH}:{os.environ['PATH']}",
        "PGHOST": str(socket_dir),
        "PGPORT": str(port),
        "SECRETS_DIR": str(secrets),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "postgres",
    }
    done = subprocess.run(
        ["bash", str(DOCKER / "postgres/init-databases.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for value in PASSWORDS.values():  # read by psql itself, never echoed
        assert value not in done.stdout + done.stderr
    return socket_dir


async def test_roles_and_databases(initialised: Path) -> None:
    conn = await asyncpg.connect(url("postgres", "postgres", initialised))
    try:
        roles = {
            r["rolname"]: r
            for r in await conn.fetch(
                "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles"
            )
        }
        for role in ("chaperone_owner", "chaperone", "synapse"):
            assert roles[role]["rolcanlogin"] and not roles[role]["rolsuper"], role
        assert not roles["chaperone"]["rolcreatedb"] and not roles["chaperone"]["rolcreaterole"]
        owners = dict(
            await conn.fetch(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                "WHERE datname IN ('chaperone', 'synapse')"
            )
        )
        assert owners == {"chaperone": "chaperone_owner", "synapse": "synapse"}
        collate = await conn.fetchval(
            "SELECT datcollate FROM pg_database WHERE datname = 'synapse'"
        )
        assert collate == "C"
        # the passwords are the secrets' (SCRAM verifiers, never the text)
        secret = await conn.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'chaperone'"
        )
        assert secret.startswith("SCRAM-SHA-256$")
    finally:
        await conn.close()


async def test_bot_migrates_as_owner_and_runs_unable_to_change_history(
    initialised: Path,
) -> None:
    from bot.db.database import history_risk, open_databases

    bot_url = url("chaperone", "chaperone", initialised)
    dbs = await open_databases(bot_url, owner_url=url("chaperone_owner", "chaperone", initialised))
    conn: Connection
    try:
        async with dbs.main.acquire() as conn:
            assert await history_risk(conn) is None
    finally:
        await dbs.close()
    bot_conn = await asyncpg.connect(bot_url)
    try:
        for statement in (
            "TRUNCATE audit_log",
            "ALTER TABLE audit_log DISABLE TRIGGER USER",
            "DELETE FROM consent",
        ):
            with pytest.raises(asyncpg.PostgresError):
                await bot_conn.execute(statement)
        with pytest.raises(asyncpg.PostgresError):  # other roles keep out of Synapse's database
            await asyncpg.connect(url("chaperone", "synapse", initialised))
    finally:
        await bot_conn.close()
