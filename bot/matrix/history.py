"""Reading a room's history and power for retention: raw events (as the homeserver serves
them, so nothing is lost in a deserialize round trip), /messages pages, the levels needed."""

from __future__ import annotations

from typing import Any, cast

from mautrix.api import Method, Path
from mautrix.errors import MNotFound
from mautrix.types import EventType, PowerLevelStateEventContent, RoomID, UserID

from bot.matrix.gateway import MatrixGateway
from bot.matrix.synapse_admin import SynapseAdmin

PAGE_SIZE = 100


def is_redacted(event: dict[str, Any]) -> bool:
    return "redacted_because" in (event.get("unsigned") or {})


class MatrixHistory:
    """`bot.service.ports.RoomHistory` over the homeserver's client-server and admin APIs."""

    def __init__(self, gateway: MatrixGateway) -> None:
        self.gateway = gateway

    async def fetch_event(self, room_id: str, event_id: str) -> dict[str, Any] | None:
        """The event as the homeserver holds it now, or None when it is gone (e.g. purged)."""
        try:
            raw = await self.gateway.client.api.request(
                Method.GET,
                Path.v3.rooms[RoomID(room_id)].event[event_id],
                metrics_method="getEvent",
            )
        except MNotFound:
            return None
        event = cast(dict[str, Any], raw)
        event.setdefault("room_id", room_id)
        return event

    async def messages_page(
        self, room_id: str, token: str | None, page_size: int = PAGE_SIZE
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One /messages page going back from `token` (None: the newest), and the next token
        (None at the start of the history the bot may see)."""
        params = {"dir": "b", "limit": str(page_size)}
        if token:
            params["from"] = token
        raw = await self.gateway.client.api.request(
            Method.GET,
            Path.v3.rooms[RoomID(room_id)].messages,
            query_params=params,
            metrics_method="getMessages",
        )
        page = cast(dict[str, Any], raw)
        chunk: list[dict[str, Any]] = list(page.get("chunk") or [])
        for event in chunk:
            event.setdefault("room_id", room_id)
        end = page.get("end")
        following = str(end) if chunk and end and end != token else None
        return chunk, following

    async def may_redact_others(self, room_id: str) -> bool:
        """Whether the bot's power reaches the room's `redact` level."""
        levels = await self._levels(room_id)
        return await self.gateway.power_level(room_id, self.gateway.user_id) >= int(levels.redact)

    async def may_send_state(self, room_id: str, event_type: str) -> bool:
        """Whether the bot's power reaches the level for this state event (else
        `state_default`)."""
        levels = await self._levels(room_id)
        needed = int(levels.get_event_level(EventType.find(event_type, EventType.Class.STATE)))
        return await self.gateway.power_level(room_id, UserID(self.gateway.user_id)) >= needed

    async def purge_status(self, purge_id: str) -> tuple[str, str | None]:
        """Synapse's status of a history purge ("active", "complete", "failed") and its error."""
        return await SynapseAdmin(self.gateway).purge_status(purge_id)

    async def _levels(self, room_id: str) -> PowerLevelStateEventContent:
        levels = await self.gateway.state_store.get_power_levels(RoomID(room_id))
        if levels is None:
            fetched = await self.gateway.client.get_state_event(
                RoomID(room_id), EventType.ROOM_POWER_LEVELS
            )
            levels = cast(PowerLevelStateEventContent, fetched)
        return levels
