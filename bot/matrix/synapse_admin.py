"""Synapse's admin purge-history API, called with `homeserver.admin_token` (never logged).

Changing calls go through MatrixEffects (dry-run); the status read is here.
"""

from __future__ import annotations

from typing import Any, cast

from mautrix.api import Method, SynapseAdminPath
from mautrix.types import RoomID, UserID

from bot.matrix.gateway import MatrixGateway
from bot.matrix.ratelimit import PacedHTTPAPI


class SynapseAdmin:
    def __init__(self, gateway: MatrixGateway) -> None:
        token = gateway.config.homeserver.admin_token
        if not token:
            raise RuntimeError("homeserver.admin_token is not set; the admin API needs it")
        # Shares the bot's HTTP session; only the bearer token differs.
        self.api = PacedHTTPAPI(
            base_url=gateway.config.homeserver.url,
            token=token,
            client_session=gateway.client.api.session,
        )

    async def start_purge(self, room_id: str, up_to_event_id: str) -> str:
        """Start purging the room's history before `up_to_event_id` (that event is kept),
        local users' events included; returns Synapse's purge ID."""
        raw = await self.api.request(
            Method.POST,
            SynapseAdminPath.v1.purge_history[RoomID(room_id)],
            content={"delete_local_events": True, "purge_up_to_event_id": up_to_event_id},
            metrics_method="purgeHistory",
        )
        return str(cast(dict[str, Any], raw)["purge_id"])

    async def purge_status(self, purge_id: str) -> tuple[str, str | None]:
        """(`active` | `complete` | `failed`, error or None)."""
        raw = await self.api.request(
            Method.GET,
            SynapseAdminPath.v1.purge_history_status[purge_id],
            metrics_method="purgeHistoryStatus",
        )
        data = cast(dict[str, Any], raw)
        return str(data.get("status", "")), data.get("error")

    async def exempt_from_rate_limits(self, user_id: str) -> None:
        """Lift Synapse's message rate limits for `user_id` (the bot's own account), so its
        redactions and notices are never paced (0 = unlimited)."""
        await self.api.request(
            Method.POST,
            SynapseAdminPath.v1.users[UserID(user_id)].override_ratelimit,
            content={"messages_per_second": 0, "burst_count": 0},
            metrics_method="overrideRatelimit",
        )
