"""v5: the audit chain becomes keyed from the next row on; message_archive refuses TRUNCATE.

`audit_chain_meta` records the first seq hashed with the key (`keyed_from_seq`): rows before it
were written with plain SHA-256 and are verified as such, every later row must carry an HMAC.
The runtime role may only read it (see `bot.db.database.apply_grants`) and a trigger refuses
changes, so the boundary cannot be moved to pass off a recomputed unkeyed chain.
"""

from __future__ import annotations

from mautrix.util.async_db import Connection

from . import upgrade_table

AUDIT_CHAIN_META = """
CREATE TABLE audit_chain_meta (
    id              BOOLEAN     PRIMARY KEY DEFAULT true CHECK (id),
    keyed_from_seq  BIGINT      NOT NULL CHECK (keyed_from_seq > 0)
);

CREATE FUNCTION audit_chain_meta_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_chain_meta is fixed at migration: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER audit_chain_meta_no_change
    BEFORE UPDATE OR DELETE ON audit_chain_meta
    FOR EACH ROW EXECUTE FUNCTION audit_chain_meta_keep();

CREATE TRIGGER audit_chain_meta_no_truncate
    BEFORE TRUNCATE ON audit_chain_meta
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_meta_keep();

INSERT INTO audit_chain_meta (keyed_from_seq)
    SELECT coalesce(max(seq), 0) + 1 FROM audit_log;
"""

MESSAGE_ARCHIVE_NO_TRUNCATE = """
CREATE TRIGGER message_archive_no_truncate
    BEFORE TRUNCATE ON message_archive
    FOR EACH STATEMENT EXECUTE FUNCTION message_archive_keep();
"""


@upgrade_table.register(description="keyed audit chain boundary, archive TRUNCATE trigger")  # type: ignore[call-arg, arg-type, untyped-decorator]
async def upgrade_v5(conn: Connection) -> None:
    for ddl in (AUDIT_CHAIN_META, MESSAGE_ARCHIVE_NO_TRUNCATE):
        await conn.execute(ddl)
