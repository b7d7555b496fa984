"""The connection a mautrix `Database` transaction holds (see `bot.mautrix_compat`)."""

from __future__ import annotations

from mautrix.util.async_db import Connection

# Relies on: mautrix.util.async_db.database.conn_var, the ContextVar in which
# Database.acquire() keeps the connection it yields (and which it yields again, instead of a
# pool connection, while one is set). Not exported by mautrix.util.async_db.
from mautrix.util.async_db.database import conn_var


def current_connection() -> Connection | None:
    """The connection `Database.acquire()` holds in this context (a caller's transaction), or
    None. Reading it never touches the pool or the context, unlike `acquire()`.

    Relies on: `mautrix.util.async_db.database.conn_var` (see its import above).
    """
    return conn_var.get()
