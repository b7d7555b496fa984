"""Repository fixtures: every test gets fresh, fully migrated databases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mautrix.util.async_db import Database

from bot.db.audit import AuditLog
from bot.db.database import Databases, open_databases

TEST_HMAC_KEY = "test-audit-hmac-key-0123456789"
"""The `audit.hmac_key` repository tests chain the audit log with."""


@pytest.fixture
def db_url(migrated_db_url: str) -> str:
    """Repository tests start from a migrated database (migration tests ask for an empty one)."""
    return migrated_db_url


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
    return AuditLog(db, TEST_HMAC_KEY)
