"""v02: per-room policy, and consent records (issue: consent)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

ROOM_POLICY = """
CREATE TABLE room_policy (
    room_id            TEXT PRIMARY KEY,
    consent            TEXT CHECK (consent IN ('required', 'off')),
    enforcement        TEXT CHECK (enforcement IN ('redact', 'warn', 'audit')),
    -- retention_set distinguishes "set to off" (NULL seconds) from "not set" (use the default)
    retention_set      BOOLEAN NOT NULL DEFAULT false,
    retention_seconds  BIGINT CHECK (retention_seconds > 0),
    legal_hold         BOOLEAN,
    require_encryption BOOLEAN,
    updated_by         TEXT NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
"""


@upgrade_table.register(description="consent records and per-room policy")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v2(conn: Connection) -> None:
    await conn.execute(ROOM_POLICY)
