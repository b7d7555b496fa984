"""v06: the effects outbox (effects carried out exactly once)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

# What the bot is to do because of an event (a redaction, a notice, a reply), written in the
# same transaction as that event's audit rows and carried out after the commit. `txn_id` is
# derived from the cause, so the homeserver answers a repeat with the first event.
OUTBOX = """
CREATE TABLE outbox (
    id            BIGSERIAL   PRIMARY KEY,
    room_id       TEXT        NOT NULL,
    txn_id        TEXT        NOT NULL UNIQUE,
    kind          TEXT        NOT NULL CHECK (kind IN ('notice', 'redact')),
    payload       JSONB       NOT NULL,
    on_done       JSONB       NOT NULL DEFAULT '[]',
    created_at    TIMESTAMPTZ NOT NULL,
    attempts      INTEGER     NOT NULL DEFAULT 0,
    last_error    TEXT,
    done_at       TIMESTAMPTZ,
    result_event  TEXT,
    failed_at     TIMESTAMPTZ
);
CREATE INDEX outbox_waiting ON outbox (room_id, id) WHERE done_at IS NULL AND failed_at IS NULL;
"""


@upgrade_table.register(description="effects outbox")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v6(conn: Connection) -> None:
    await conn.execute(OUTBOX)
