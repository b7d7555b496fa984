"""Every place Chaperone relies on mautrix internals, for want of a public hook.

Each use names the private mautrix code it depends on. `tests/unit/test_mautrix_compat.py`
checks that code still exists and behaves as relied on here, so a mautrix upgrade that changes
it fails that test (with a message saying what to look at) instead of silently undoing what the
override is for. mautrix's public API is used everywhere else: the 429 pacing in
`bot/matrix/ratelimit.py`, for one, is an aiohttp client middleware, not an HTTPAPI override.
"""

from __future__ import annotations

import logging
from typing import Any

from mautrix.client import Client
from mautrix.types import JSON, GenericEvent
from mautrix.types.util.serializable import SerializerError
from mautrix.util.async_db import Connection

# Relies on: mautrix.util.async_db.database.conn_var, the ContextVar in which
# Database.acquire() keeps the connection it yields (and which it yields again, instead of a
# pool connection, while one is set). Not exported by mautrix.util.async_db.
from mautrix.util.async_db.database import conn_var

# The gateway's logger: the line QuietClient logs reads as it did when it lived there.
log = logging.getLogger("chaperone.matrix")


class QuietClient(Client):
    """mautrix's Client, minus its warning that quotes a whole undecodable event (content
    included) in the log: only the event's type and ID are logged here.

    Relies on: `mautrix.client.syncer.BaseSyncer._try_deserialize(self, type, data)`, which
    `handle_sync` calls for every event of a /sync response and which logs
    `f"Failed to deserialize {data} ..."` on a SerializerError. mautrix has no public hook for
    that message, so the method is replaced (same contract: the event, a GenericEvent if only
    that can be read, else None).
    """

    def _try_deserialize(self, type: Any, data: JSON) -> Any:
        try:
            return type.deserialize(data)
        except SerializerError:
            event: dict[str, Any] = data if isinstance(data, dict) else {}
            log.warning(
                "Could not read a %s event %s (%s)",
                event.get("type"),
                event.get("event_id"),
                type.__name__,
            )
            try:
                return GenericEvent.deserialize(data)
            except SerializerError:
                return None


def current_connection() -> Connection | None:
    """The connection `Database.acquire()` holds in this context (a caller's transaction), or
    None. Reading it never touches the pool or the context, unlike `acquire()`.

    Relies on: `mautrix.util.async_db.database.conn_var` (see its import above).
    """
    return conn_var.get()
