"""v03: tracked event metadata, sealed archive, sweep progress (issue: retention)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

# Metadata only: no content column exists, so no content can end up here. The removal columns
# make the sweep resumable: removing_since marks a request in flight when the bot stopped.
TRACKED_EVENTS = """
CREATE TABLE tracked_events (
    event_id        TEXT        PRIMARY KEY,
    room_id         TEXT        NOT NULL,
    sender          TEXT        NOT NULL,
    event_type      TEXT        NOT NULL,
    is_state        BOOLEAN     NOT NULL,
    origin_ts       BIGINT      NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    redacted        BOOLEAN     NOT NULL DEFAULT false,
    archived_at     TIMESTAMPTZ,
    removing_since  TIMESTAMPTZ,
    removed_at      TIMESTAMPTZ,
    removal_id      TEXT,
    failed_at       TIMESTAMPTZ,
    failure         TEXT
);
CREATE INDEX tracked_events_pending_idx ON tracked_events (room_id, origin_ts)
    WHERE removed_at IS NULL AND NOT redacted AND NOT is_state;
"""

# Sealed copies (libsodium sealed boxes): only the holder of the private key can open them.
# The clinical record is kept: rows are never changed, and the bot never deletes them.
MESSAGE_ARCHIVE = """
CREATE TABLE message_archive (
    event_id     TEXT        PRIMARY KEY,
    room_id      TEXT        NOT NULL,
    sender       TEXT        NOT NULL,
    origin_ts    BIGINT      NOT NULL,
    key_id       TEXT        NOT NULL,
    sealed       BYTEA       NOT NULL,
    archived_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX message_archive_room_idx ON message_archive (room_id, origin_ts);
CREATE INDEX message_archive_sender_idx ON message_archive (sender, origin_ts);

CREATE FUNCTION message_archive_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'message_archive is the kept clinical record: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER message_archive_no_update_delete
    BEFORE UPDATE OR DELETE ON message_archive
    FOR EACH ROW EXECUTE FUNCTION message_archive_keep();
"""

# Per-room retention bookkeeping: what the room was told, what state was published, whether
# its history still needs a back-fill (set in the same transaction as the event that asked).
RETENTION_ROOMS = """
CREATE TABLE retention_rooms (
    room_id              TEXT        PRIMARY KEY,
    announced_retention  BIGINT,
    announced_at         TIMESTAMPTZ,
    published_state      JSONB,
    backfill_requested   TIMESTAMPTZ,
    backfilled_at        TIMESTAMPTZ,
    last_swept_at        TIMESTAMPTZ
);
"""


@upgrade_table.register(description="tracked event metadata, sealed archive, sweep progress")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v3(conn: Connection) -> None:
    for ddl in (TRACKED_EVENTS, MESSAGE_ARCHIVE, RETENTION_ROOMS):
        await conn.execute(ddl)
    # Rooms joined before this version: their history is recorded on the first start.
    await conn.execute(
        "INSERT INTO retention_rooms (room_id, backfill_requested)"
        " SELECT room_id, now() FROM rooms WHERE left_at IS NULL"
    )
