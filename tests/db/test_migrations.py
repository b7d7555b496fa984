"""Schema: our migrations, the crypto store's and the state store's, side by side."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from mautrix.client.state_store.asyncpg import PgStateStore
from mautrix.crypto.store.asyncpg import PgCryptoStore

from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import Databases, open_databases
from bot.db.upgrade import upgrade_table
from tests.db.conftest import TEST_HMAC_KEY

OUR_TABLES = {"audit_log", "sync_state", "pending_decryption", "rooms", "staff", "bot_identity"}


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """An empty database: the migrations themselves are under test."""
    return empty_db_url


async def schema_snapshot(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            """SELECT table_name, column_name, data_type, is_nullable
               FROM information_schema.columns WHERE table_schema = 'public'
               ORDER BY 1, 2"""
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        )
        triggers = await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
        )
        versions = {
            t: await conn.fetchval(f"SELECT version FROM {t}")  # noqa: S608 (fixed names)
            for t in ("chaperone_version", "crypto_version", "mx_version")
        }
    finally:
        await conn.close()
    return {
        "columns": [tuple(r) for r in columns],
        "indexes": [tuple(r) for r in indexes],
        "triggers": [r[0] for r in triggers],
        "versions": versions,
    }


async def test_migrations_create_our_tables(db_url: str, dbs: Databases) -> None:
    snapshot = await schema_snapshot(db_url)
    tables = {c[0] for c in snapshot["columns"]}
    assert OUR_TABLES <= tables
    assert snapshot["versions"]["chaperone_version"] == len(upgrade_table.upgrades)
    assert {"audit_log_no_update_delete", "audit_log_no_truncate"} <= set(snapshot["triggers"])
    indexes = dict(snapshot["indexes"])
    assert "UNIQUE" in indexes["audit_log_event_action_key"]
    assert "WHERE (event_id IS NOT NULL)" in indexes["audit_log_event_action_key"]


async def test_three_version_tables_side_by_side(db_url: str, dbs: Databases) -> None:
    snapshot = await schema_snapshot(db_url)
    tables = {c[0] for c in snapshot["columns"]}
    assert {"chaperone_version", "crypto_version", "mx_version"} <= tables
    assert {"crypto_account", "crypto_megolm_inbound_session"} <= tables  # crypto store
    assert {"mx_room_state", "mx_user_profile"} <= tables  # state store
    assert all(v is not None and v > 0 for v in snapshot["versions"].values())
    assert dbs.crypto.upgrade_table is PgCryptoStore.upgrade_table
    assert dbs.state.upgrade_table is PgStateStore.upgrade_table


async def test_rerunning_migrations_is_a_noop(db_url: str, dbs: Databases) -> None:
    await AuditLog(dbs.main, TEST_HMAC_KEY).append([AuditEntry("system", "bot.started")])
    before = await schema_snapshot(db_url)
    again = await open_databases(db_url)
    try:
        assert (
            await AuditLog(again.main, TEST_HMAC_KEY).verify()
            == await AuditLog(dbs.main, TEST_HMAC_KEY).verify()
        )
    finally:
        await again.close()
    assert await schema_snapshot(db_url) == before


async def test_concurrent_first_starts_both_succeed(db_url: str) -> None:
    first, second = await asyncio.gather(open_databases(db_url), open_databases(db_url))
    try:
        assert (await schema_snapshot(db_url))["versions"]["chaperone_version"] == len(
            upgrade_table.upgrades
        )
    finally:
        await first.close()
        await second.close()


async def test_newer_schema_than_code_refuses_to_start(db_url: str, dbs: Databases) -> None:
    await dbs.main.execute("UPDATE chaperone_version SET version = 99")
    with pytest.raises(Exception, match="v99"):
        await open_databases(db_url)
