"""Repository fixtures: every test gets fresh, fully migrated databases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mautrix.util.async_db import Database
from yarl import URL

from bot.db.audit import AuditLog
from bot.db.database import Databases, open_databases


@pytest.fixture
def db_url(db_url: str, pg_server_url: str) -> str:
    """The shared fixture's URL, with the server's query (`?host=<socket dir>`) kept.

    tests/conftest.py builds it with yarl's `with_path`, which drops the query, so a socket URL
    (pgserver's) silently points at whatever server listens on the default socket.
    """
    url = URL(db_url)
    if not url.query:
        url = url.with_query(URL(pg_server_url).query)
    return str(url)


@pytest.fixture
async def dbs(db_url: str) -> AsyncIterator[Databases]:
    databases = await open_databases(db_url)
    yield databases
    await databases.close()


@pytest.fixture
def db(dbs: Databases) -> Database:
    return dbs.main


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return AuditLog(db)
