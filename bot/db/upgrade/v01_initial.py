"""v1: audit log (append-only), sync position, pending decryption, rooms, staff, bot identity."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

AUDIT_LOG = """
CREATE TABLE audit_log (
    seq        BIGINT      PRIMARY KEY CHECK (seq > 0),
    ts         TIMESTAMPTZ NOT NULL,
    actor      TEXT        NOT NULL,
    action     TEXT        NOT NULL,
    room_id    TEXT,
    event_id   TEXT,
    subject    TEXT,
    details    JSONB       NOT NULL CHECK (jsonb_typeof(details) = 'object'),
    prev_hash  TEXT        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash       TEXT        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);

-- Replaying a Matrix event after a crash must not add a second row.
CREATE UNIQUE INDEX audit_log_event_action_key
    ON audit_log (event_id, action) WHERE event_id IS NOT NULL;
CREATE INDEX audit_log_room_idx    ON audit_log (room_id, seq) WHERE room_id IS NOT NULL;
CREATE INDEX audit_log_actor_idx   ON audit_log (actor, seq);
CREATE INDEX audit_log_subject_idx ON audit_log (subject, seq) WHERE subject IS NOT NULL;
CREATE INDEX audit_log_action_idx  ON audit_log (action, seq);
CREATE INDEX audit_log_ts_idx      ON audit_log (ts);

-- Stops bugs and careless operators. A superuser or the table's owner can still get around
-- it (session_replication_role, DISABLE TRIGGER); the hash chain is what catches that.
CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING HINT = 'Audit rows are never changed or removed; append a new row instead.';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"""

SYNC_STATE = """
CREATE TABLE sync_state (
    account_id  TEXT        PRIMARY KEY,
    next_batch  TEXT        NOT NULL,
    filter_id   TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

# Events that could not be decrypted yet. The stored event is the raw m.room.encrypted event:
# this table must never hold plaintext, and the CHECK makes the schema say so too.
PENDING_DECRYPTION = """
CREATE TABLE pending_decryption (
    event_id       TEXT        PRIMARY KEY,
    room_id        TEXT        NOT NULL,
    sender         TEXT        NOT NULL,
    session_id     TEXT        NOT NULL,
    sender_key     TEXT,
    event          JSONB       NOT NULL CHECK (event->>'type' = 'm.room.encrypted'),
    first_seen     TIMESTAMPTZ NOT NULL,
    attempts       INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt   TIMESTAMPTZ NOT NULL,
    withheld_code  TEXT
);
CREATE INDEX pending_decryption_next_attempt_idx ON pending_decryption (next_attempt);
CREATE INDEX pending_decryption_session_idx ON pending_decryption (session_id);
"""

ROOMS = """
CREATE TABLE rooms (
    room_id     TEXT        PRIMARY KEY,
    joined_at   TIMESTAMPTZ NOT NULL,
    left_at     TIMESTAMPTZ,
    invited_by  TEXT
);
"""

STAFF = """
CREATE TABLE staff (
    user_id   TEXT        PRIMARY KEY,
    added_by  TEXT        NOT NULL,
    added_at  TIMESTAMPTZ NOT NULL
);
"""

BOT_IDENTITY = """
CREATE TABLE bot_identity (
    account_id    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    access_token  TEXT
);
"""


# mautrix types register() as returning a union, which mypy cannot apply as a decorator.
@upgrade_table.register(  # type: ignore[call-arg, arg-type, untyped-decorator]
    description="Audit log, sync state, pending decryption, rooms, staff, bot identity"
)
async def upgrade_v1(conn: Connection) -> None:
    for ddl in (AUDIT_LOG, SYNC_STATE, PENDING_DECRYPTION, ROOMS, STAFF, BOT_IDENTITY):
        await conn.execute(ddl)
