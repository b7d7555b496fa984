"""The keyed audit chain against real Postgres: forgery without the key, checkpoints, roles."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import asyncpg
import pytest

from bot.config import parse_config
from bot.db.audit import AuditEntry, AuditLog, VerifyResult
from bot.db.database import history_risk, open_databases
from bot.policy.audit_chain import GENESIS_HASH, AuditRecord, build_record, derive_chain_key
from bot.service import audit_cli
from bot.service.audit_checkpoints import AuditCheckpointer, read_checkpoint_file
from tests.db.conftest import TEST_HMAC_KEY
from tests.db.roles import split_roles

ROOM = "!room:clinic.example"
PATIENT = "@patient:clinic.example"


def entries(n: int, start: int = 1) -> list[AuditEntry]:
    return [
        AuditEntry(
            actor="@therapist:clinic.example",
            action="consent.revoked" if i == 4 else "message.sent",
            room_id=ROOM,
            event_id=f"$e{i}",
            subject=PATIENT,
            details={"i": i},
        )
        for i in range(start, start + n)
    ]


async def stored(conn: asyncpg.Connection) -> list[AuditRecord]:
    audit_rows = await conn.fetch("SELECT * FROM audit_log ORDER BY seq")
    return [AuditRecord(**{**dict(r), "details": json.loads(r["details"])}) for r in audit_rows]


async def rewrite(db_url: str, records: list[AuditRecord]) -> None:
    """As a superuser past the triggers: replace the stored rows by `records` (same seqs)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        for r in records:
            await conn.execute(
                "UPDATE audit_log SET action = $2, details = $3::jsonb, prev_hash = $4,"
                " hash = $5 WHERE seq = $1",
                r.seq,
                r.action,
                json.dumps(r.details),
                r.prev_hash,
                r.hash,
            )
    finally:
        await conn.close()


def recompute(records: list[AuditRecord], from_seq: int, key: bytes | None) -> list[AuditRecord]:
    """The chain from `from_seq` on rebuilt with `key` (None: unkeyed), as a forger would."""
    out: list[AuditRecord] = []
    prev = GENESIS_HASH
    for r in records:
        if r.seq < from_seq:
            prev = r.hash
            continue
        action = "consent.granted" if r.seq == 4 else r.action
        rebuilt = build_record(
            r.seq,
            r.ts,
            r.actor,
            action,
            r.room_id,
            r.event_id,
            r.subject,
            r.details,
            prev,
            key=key,
        )
        out.append(rebuilt)
        prev = rebuilt.hash
    return out


@pytest.mark.parametrize(
    "forger_key",
    [None, derive_chain_key("a-guessed-wrong-hmac-key"), b"\x00" * 32],
    ids=["no key", "wrong key", "zero key"],
)
async def test_chain_recomputed_without_the_key_fails_at_the_changed_row(
    audit: AuditLog, db_url: str, forger_key: bytes | None
) -> None:
    await audit.append(entries(10))
    assert (await audit.verify()).ok
    conn = await asyncpg.connect(db_url)
    try:
        records = await stored(conn)
    finally:
        await conn.close()
    forged = recompute(records, 4, forger_key)
    await rewrite(db_url, forged)
    result = await audit.verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)


async def test_the_holder_of_the_key_can_verify_and_others_cannot(audit: AuditLog) -> None:
    await audit.append(entries(3))
    other = AuditLog(audit.db, "another-clinic-hmac-key-42")
    assert (await other.verify()).first_broken_seq == 1


async def test_old_unkeyed_rows_verify_but_cannot_be_forged_after_the_switch(
    audit: AuditLog, db_url: str
) -> None:
    # A database from before the keyed chain: three SHA-256 rows, the boundary after them.
    conn = await asyncpg.connect(db_url)
    try:
        ts = await conn.fetchval("SELECT now()")
        prev, legacy = GENESIS_HASH, []
        for seq in (1, 2, 3):
            r = build_record(seq, ts, "system", "bot.started", None, None, None, {}, prev)
            legacy.append(r)
            prev = r.hash
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM audit_chain_meta")
        await conn.execute("INSERT INTO audit_chain_meta (keyed_from_seq) VALUES (4)")
        await conn.copy_records_to_table(
            "audit_log",
            records=[
                (r.seq, r.ts, r.actor, r.action, None, None, None, "{}", r.prev_hash, r.hash)
                for r in legacy
            ],
        )
    finally:
        await conn.close()
    assert await audit.append(entries(3, start=10)) == [4, 5, 6]
    result = await audit.verify()
    assert (result.ok, result.rows, result.keyed_from_seq) == (True, 6, 4)

    # Rewriting an old row and recomputing the old rows' unkeyed hashes breaks the first keyed
    # row, which covers the old head.
    forged_prev, forged = GENESIS_HASH, []
    for r in legacy:
        f = build_record(r.seq, r.ts, "someone", r.action, None, None, None, {}, forged_prev)
        forged.append(f)
        forged_prev = f.hash
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        for f in forged:
            await conn.execute(
                "UPDATE audit_log SET actor = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
                f.seq,
                f.actor,
                f.prev_hash,
                f.hash,
            )
    finally:
        await conn.close()
    assert (await audit.verify()).first_broken_seq == 4

    # Moving the boundary away (or removing it) does not make unkeyed rows pass either.
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM audit_chain_meta")
    finally:
        await conn.close()
    assert (await audit.verify()).first_broken_seq == 1


async def test_cut_tail_is_reported_against_the_last_checkpoint(
    audit: AuditLog, db_url: str, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints.jsonl"
    cp = AuditCheckpointer(audit, interval_seconds=3600, checkpoint_file=str(checkpoints))
    await audit.append(entries(5))
    first = await cp.checkpoint("interval")
    await audit.append(entries(5, start=20))
    last = await cp.checkpoint("stop")
    assert first is not None and last is not None and (first.seq, last.seq) == (6, 12)
    assert await cp.checkpoint("stop") is None  # the head has not moved
    assert read_checkpoint_file(str(checkpoints)) == ([first, last], 0)
    assert (await audit.verify(cp.published)).ok

    conn = await asyncpg.connect(db_url)  # a superuser removes the last three rows
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM audit_log WHERE seq > 9")
    finally:
        await conn.close()
    assert (await audit.verify()).ok  # the chain alone cannot see a cut tail
    result = await audit.verify(read_checkpoint_file(str(checkpoints))[0])
    assert (result.ok, result.truncated_after_seq, result.first_broken_seq) == (False, 9, 10)
    assert result.checkpoint_mismatch_seq is None

    config = parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1"},
            "bot": {"user_id": "@chaperone:clinic.test", "password": "a-real-password-1"},
            "encryption": {"pickle_key": "pickle-key-0123456789"},
            "audit": {"hmac_key": TEST_HMAC_KEY, "checkpoint_file": str(checkpoints)},
            "database": {"url": db_url},
        },
        {},
        tmp_path,
    )
    ok, message = await audit_cli.verify(config)
    assert not ok and "BROKEN at seq 10" in message and "after seq 9" in message


async def test_rewritten_prefix_under_a_checkpoint_is_a_checkpoint_mismatch(
    audit: AuditLog, db_url: str
) -> None:
    await audit.append(entries(6))
    cp = AuditCheckpointer(audit, interval_seconds=3600)
    checkpoint = await cp.checkpoint("interval")
    assert checkpoint is not None and checkpoint.seq == 7
    conn = await asyncpg.connect(db_url)
    try:
        records = await stored(conn)
    finally:
        await conn.close()
    # Someone holding the key rewrites row 4 and recomputes the chain: only the checkpoint
    # published outside the database shows it.
    await rewrite(db_url, recompute(records, 4, derive_chain_key(TEST_HMAC_KEY)))
    assert (await audit.verify()).ok
    result = await audit.verify(cp.published)
    assert (result.ok, result.checkpoint_mismatch_seq, result.first_broken_seq) == (False, 7, 7)
    assert result.truncated_after_seq is None


async def test_runtime_role_cannot_change_history(empty_db_url: str) -> None:
    async with split_roles(empty_db_url) as roles:
        dbs = await open_databases(roles.app_url, owner_url=roles.owner_url)
        try:
            audit = AuditLog(dbs.main, TEST_HMAC_KEY)
            assert await audit.append(entries(3)) == [1, 2, 3]
            assert await history_risk(dbs.main) is None
            owner = await dbs.main.fetchval(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'audit_log'"
            )
            assert owner == roles.owner
        finally:
            await dbs.close()
        app = await asyncpg.connect(roles.app_url)
        try:
            for statement in (
                "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                "TRUNCATE audit_log",
                "TRUNCATE message_archive",
                "TRUNCATE consent",
                "SET session_replication_role = replica",
                "ALTER TABLE message_archive DISABLE TRIGGER ALL",
                "UPDATE audit_chain_meta SET keyed_from_seq = 100",
                "INSERT INTO audit_chain_meta (id, keyed_from_seq) VALUES (false, 1)",
                "UPDATE consent SET user_id = 'x'",
                "DELETE FROM audit_log WHERE seq = 3",
                "UPDATE audit_log SET actor = 'x' WHERE seq = 3",
                "DELETE FROM message_archive",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(statement)
            assert await app.fetchval("SELECT count(*) FROM audit_log") == 3
            # What the bot does need: the consent columns a revocation sets, other tables.
            await app.execute(
                "UPDATE consent SET revoked_at = now(), revoked_by = 'x' WHERE false"
            )
            await app.execute("DELETE FROM consent_notice")
        finally:
            await app.close()
        owner_conn = await asyncpg.connect(roles.owner_url)
        try:
            assert "owns audit_log, consent, message_archive" in (
                await history_risk(owner_conn) or ""
            )
        finally:
            await owner_conn.close()
        # A second start re-applies the grants idempotently.
        again = await open_databases(roles.app_url, owner_url=roles.owner_url)
        await again.close()


async def test_message_archive_refuses_truncate_even_for_its_owner(db_url: str) -> None:
    dbs = await open_databases(db_url)
    await dbs.close()
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.RaiseError, match="kept clinical record"):
            await conn.execute("TRUNCATE message_archive")
    finally:
        await conn.close()


async def test_superuser_role_is_reported(db_url: str) -> None:
    dbs = await open_databases(db_url)  # the test server's URL is a superuser's
    try:
        assert "is a superuser" in (await history_risk(dbs.main) or "")
    finally:
        await dbs.close()


def test_verify_result_defaults_keep_the_old_shape() -> None:
    fields = {f.name for f in dataclasses.fields(VerifyResult)}
    assert {"truncated_after_seq", "checkpoint_mismatch_seq"} <= fields
