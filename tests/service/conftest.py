"""Service tests: real Postgres (the repository fixtures of tests/db), the in-memory Matrix of
tests/fakes, one FakeClock. No homeserver: each test runs in milliseconds."""

from __future__ import annotations

import pytest
from mautrix.util.async_db import Database

from bot.db.audit import AuditLog
from tests.db.conftest import audit, db, db_url, dbs
from tests.service.builder import ServiceBot, build

__all__ = ["audit", "db", "db_url", "dbs"]  # the fixtures, shared with tests/db


@pytest.fixture
async def bot(db: Database, audit: AuditLog) -> ServiceBot:
    return build(db, audit)
