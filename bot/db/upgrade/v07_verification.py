"""v07: interactive verifications waiting for (or decided by) the operator."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

# A row appears when a SAS flow's short code is ready; the operator compares it on the console
# (`chaperone verify --list`) and sets `confirmed` or `rejected`; the running bot carries that
# out and records how it ended. `device_key` is the peer device's ed25519 key once verified:
# the bot counts that device as `verified` (bot.admin_min_trust).
VERIFICATION = """
CREATE TABLE verification (
    id           BIGSERIAL   PRIMARY KEY,
    txn          TEXT        NOT NULL,
    user_id      TEXT        NOT NULL,
    device_id    TEXT        NOT NULL,
    transport    TEXT        NOT NULL CHECK (transport IN ('to_device', 'room')),
    room_id      TEXT,
    emoji        TEXT        NOT NULL,
    decimals     TEXT        NOT NULL,
    state        TEXT        NOT NULL CHECK (state IN
                   ('waiting', 'confirmed', 'rejected', 'done', 'cancelled', 'expired')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    decided_at   TIMESTAMPTZ,
    decided_by   TEXT,
    finished_at  TIMESTAMPTZ,
    cancel_code  TEXT,
    device_key   TEXT,
    master_key   TEXT
);
CREATE INDEX verification_open ON verification (id) WHERE state IN ('waiting', 'confirmed');
CREATE INDEX verification_verified ON verification (user_id) WHERE state = 'done';
"""


@upgrade_table.register(description="interactive verification")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v7(conn: Connection) -> None:
    await conn.execute(VERIFICATION)
