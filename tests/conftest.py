"""Shared fixtures: a real Postgres for every test that needs one, a fresh database per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

pytest_plugins = ["tests.fixtures_synapse"]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A Postgres server URL: CHAPERONE_TEST_DATABASE_URL, or a throwaway embedded cluster."""
    configured = os.environ.get("CHAPERONE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="chaperone-pg-") as data_dir:
        server = get_server(data_dir, cleanup_mode="stop")
        server.psql("ALTER SYSTEM SET fsync = off")
        server.psql("ALTER SYSTEM SET synchronous_commit = off")
        server.psql("ALTER SYSTEM SET full_page_writes = off")
        server.psql("SELECT pg_reload_conf()")
        yield server.get_uri()
        server.cleanup()


def _with_database(url: str, name: str) -> str:
    """Return url pointing at database `name` (works for host= query-style socket URLs too)."""
    from yarl import URL

    parsed = URL(url)
    # with_path drops the query, and pgserver's URL names its socket directory in ?host=
    return str(parsed.with_path("/" + name).with_query(parsed.query))


async def _fresh_database(server_url: str, template: str = "template1") -> str:
    name = "chaperone_test_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    finally:
        await admin.close()
    return name


async def _drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def empty_db_url(pg_server_url: str) -> AsyncIterator[str]:
    """A brand-new, empty database for one test; dropped afterwards."""
    name = await _fresh_database(pg_server_url)
    yield _with_database(pg_server_url, name)
    await _drop_database(pg_server_url, name)


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """The test's database: empty here (the bot migrates it); tests/db overrides it with a
    migrated copy."""
    return empty_db_url


@pytest.fixture(scope="session")
async def migrated_template(pg_server_url: str) -> AsyncIterator[str]:
    """A database every migration has run on, once per session, to copy for each test."""
    from bot.db.database import open_databases

    name = await _fresh_database(pg_server_url)
    databases = await open_databases(_with_database(pg_server_url, name))
    await databases.close()
    yield name
    await _drop_database(pg_server_url, name)


@pytest.fixture
async def migrated_db_url(pg_server_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh database already migrated (a copy of the template: a tenth of the time of
    running the migrations); dropped afterwards. Migration tests use `db_url`."""
    name = await _fresh_database(pg_server_url, migrated_template)
    yield _with_database(pg_server_url, name)
    await _drop_database(pg_server_url, name)
