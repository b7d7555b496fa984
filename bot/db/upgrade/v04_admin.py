"""v04: posture state and admin surface (issue: admin surface)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

# The findings of each room's last posture check, so that only new findings count as drift
# (across restarts too). Codes only, e.g. ["encryption", "join_rule"].
ROOM_POSTURE = """
CREATE TABLE room_posture (
    room_id     TEXT        PRIMARY KEY,
    findings    JSONB       NOT NULL CHECK (jsonb_typeof(findings) = 'array'),
    checked_at  TIMESTAMPTZ NOT NULL
);
"""


@upgrade_table.register(description="posture state and admin surface")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v4(conn: Connection) -> None:
    await conn.execute(ROOM_POSTURE)
