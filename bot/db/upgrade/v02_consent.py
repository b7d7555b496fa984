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

# Evidence of consent: one row per agreement, never deleted. A patient's consent in a
# room is their newest row. Only the revocation and the once-set bookkeeping columns may change,
# and only from NULL; everything the patient agreed to is fixed when the row is written.
CONSENT = """
CREATE TABLE consent (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id             TEXT        NOT NULL,
    user_id             TEXT        NOT NULL,
    terms_version       TEXT        NOT NULL,
    terms_sha256        TEXT        NOT NULL CHECK (terms_sha256 ~ '^[0-9a-f]{64}$'),
    source              TEXT        NOT NULL CHECK (source IN ('message', 'offline')),
    event_id            TEXT        NOT NULL,
    recorded_by         TEXT        NOT NULL,
    note                TEXT,
    hours               TEXT        NOT NULL,
    timezone            TEXT        NOT NULL,
    topics              TEXT[]      NOT NULL,
    max_per_day         INTEGER     NOT NULL CHECK (max_per_day > 0),
    granted_at          TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL CHECK (expires_at > granted_at),
    revoked_at          TIMESTAMPTZ,
    revoked_by          TEXT,
    revoke_event_id     TEXT,
    reasked_at          TIMESTAMPTZ,
    expiry_recorded_at  TIMESTAMPTZ,
    CHECK (source = 'message' OR note IS NOT NULL),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
-- A replayed command (after a crash) must not record a second consent.
CREATE UNIQUE INDEX consent_event_key ON consent (event_id);
CREATE INDEX consent_room_user_idx ON consent (room_id, user_id, id);
CREATE INDEX consent_open_idx ON consent (expires_at)
    WHERE revoked_at IS NULL AND expiry_recorded_at IS NULL;

CREATE FUNCTION consent_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'consent records are never removed: % is not allowed', TG_OP
            USING HINT = 'Revoke a consent instead; the record stays as evidence.';
    END IF;
    IF (NEW.id, NEW.room_id, NEW.user_id, NEW.terms_version, NEW.terms_sha256, NEW.source,
        NEW.event_id, NEW.recorded_by, NEW.note, NEW.hours, NEW.timezone, NEW.topics,
        NEW.max_per_day, NEW.granted_at, NEW.expires_at)
       IS DISTINCT FROM
       (OLD.id, OLD.room_id, OLD.user_id, OLD.terms_version, OLD.terms_sha256, OLD.source,
        OLD.event_id, OLD.recorded_by, OLD.note, OLD.hours, OLD.timezone, OLD.topics,
        OLD.max_per_day, OLD.granted_at, OLD.expires_at)
    THEN
        RAISE EXCEPTION 'what a patient agreed to is never changed'
            USING HINT = 'Record a new consent instead.';
    END IF;
    IF (OLD.revoked_at IS NOT NULL
            AND (NEW.revoked_at, NEW.revoked_by, NEW.revoke_event_id)
                IS DISTINCT FROM (OLD.revoked_at, OLD.revoked_by, OLD.revoke_event_id))
       OR (OLD.reasked_at IS NOT NULL AND NEW.reasked_at IS DISTINCT FROM OLD.reasked_at)
       OR (OLD.expiry_recorded_at IS NOT NULL
            AND NEW.expiry_recorded_at IS DISTINCT FROM OLD.expiry_recorded_at)
    THEN
        RAISE EXCEPTION 'a recorded revocation, renewal request or expiry is never changed';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER consent_no_change
    BEFORE UPDATE OR DELETE ON consent
    FOR EACH ROW EXECUTE FUNCTION consent_keep();

CREATE TRIGGER consent_no_truncate
    BEFORE TRUNCATE ON consent
    FOR EACH STATEMENT EXECUTE FUNCTION consent_keep();
"""

# Staff messages each patient received, per room (event IDs and times only, never content):
# max_per_day counts these over the patient's local day, whatever their time zone is now.
CONSENT_CONTACT = """
CREATE TABLE consent_contact (
    room_id     TEXT        NOT NULL,
    patient_id  TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    sender      TEXT        NOT NULL,
    sent_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (room_id, patient_id, event_id)
);
CREATE INDEX consent_contact_day_idx ON consent_contact (room_id, patient_id, sent_at);
"""

# When the bot last told someone something, so it does not repeat itself: violation notices
# (per sender), after-hours notices and posted terms (per patient).
CONSENT_NOTICE = """
CREATE TABLE consent_notice (
    room_id  TEXT        NOT NULL,
    user_id  TEXT        NOT NULL,
    kind     TEXT        NOT NULL CHECK (kind IN ('violation', 'after_hours', 'terms')),
    sent_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (room_id, user_id, kind)
);
"""


@upgrade_table.register(description="consent records and per-room policy")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v2(conn: Connection) -> None:
    for ddl in (ROOM_POLICY, CONSENT, CONSENT_CONTACT, CONSENT_NOTICE):
        await conn.execute(ddl)
