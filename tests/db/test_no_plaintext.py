"""A message body that went through message_hmac is stored nowhere, in any table."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from mautrix.types import EventID, RoomID, UserID

from bot.db.audit import AuditEntry, AuditLog
from bot.db.database import Databases, transaction
from bot.db.pending_decryption import PendingDecryption
from bot.db.sync_state import SyncState
from bot.policy.audit_chain import message_hmac
from tests.db.conftest import TEST_HMAC_KEY

BODY = "Session notes: Zoë reports panic attacks since März, diagnosis F41.0"
KEY = "test-hmac-key-not-secret"


async def test_message_body_is_not_stored_anywhere(db_url: str, dbs: Databases) -> None:
    digest = message_hmac(KEY, BODY)
    audit = AuditLog(dbs.main, TEST_HMAC_KEY)
    async with transaction(dbs.main):
        await audit.append(
            [
                AuditEntry(
                    "@therapist:clinic.example",
                    "message.sent",
                    "!r:clinic.example",
                    "$m1",
                    details={"hmac": digest, "msgtype": "m.text", "length": len(BODY)},
                )
            ]
        )
        await SyncState(dbs.main).save("bot", "s_1")
    now = datetime.now(UTC)
    await PendingDecryption(dbs.main).add(
        EventID("$m2"),
        RoomID("!r:clinic.example"),
        UserID("@patient:clinic.example"),
        "sess",
        "ck",
        {"type": "m.room.encrypted", "content": {"ciphertext": "AwgAEnACbWVn..."}},
        first_seen=now,
        next_attempt=now,
    )

    conn = await asyncpg.connect(db_url)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(table_name) AS t FROM information_schema.tables"
            " WHERE table_schema = 'public' ORDER BY 1"
        )
        dump = {
            r["t"]: await conn.fetchval(
                f"SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM {r['t']} x"  # noqa: S608
            )
            for r in tables
        }
    finally:
        await conn.close()
    assert len(dump) > 10  # ours, the crypto store's and the state store's
    everything = "\n".join(dump.values())
    assert digest in dump["audit_log"]  # the check can see what is stored
    for needle in (BODY, "panic attacks", "F41.0", "Zoë"):
        assert needle not in everything
