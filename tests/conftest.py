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


@pytest.fixture
async def db_url(pg_server_url: str) -> AsyncIterator[str]:
    """A brand-new, empty database for one test; dropped afterwards."""
    name = "chaperone_test_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
