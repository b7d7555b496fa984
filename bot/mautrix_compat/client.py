"""mautrix's Client with a quieter deserialization warning (see `bot.mautrix_compat`)."""

from __future__ import annotations

import logging
from typing import Any

from mautrix.client import Client
from mautrix.types import JSON, GenericEvent
from mautrix.types.util.serializable import SerializerError

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
