"""The one module that changes Matrix: notices, redactions, state, kicks, uploads, new rooms.

With `bot.dry_run` on, everything that would change a room (redact, state, kick, create) is
logged and reported as skipped instead; notices are still sent, so operators see what would
happen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from mautrix.api import Method, Path
from mautrix.crypto.attachments import encrypt_attachment
from mautrix.types import (
    EventID,
    EventType,
    Format,
    MediaMessageEventContent,
    MessageType,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from bot.matrix.gateway import MatrixGateway
from bot.matrix.ratelimit import retry_rate_limited
from bot.matrix.synapse_admin import SynapseAdmin

log = logging.getLogger("chaperone.effects")


@dataclass(frozen=True)
class EffectResult:
    """What happened: `done` is False when dry-run skipped it."""

    done: bool
    event_id: str | None = None


class MatrixEffects:
    def __init__(self, gateway: MatrixGateway, *, dry_run: bool) -> None:
        self.gateway = gateway
        self.client = gateway.client
        self.dry_run = dry_run

    async def _ensure_members(self, room_id: str) -> None:
        # Keys are shared with the member list mautrix knows: make sure it is the full list.
        if not await self.gateway.state_store.has_full_member_list(RoomID(room_id)):
            await self.gateway.load_state(room_id)

    async def notice(
        self,
        room_id: str,
        text: str,
        *,
        mentions: Sequence[str] = (),
        html: str | None = None,
        txn_id: str | None = None,
    ) -> str:
        """Send a notice (encrypted when the room is); `mentions` become pills and m.mentions.
        `html`, when given, is the `formatted_body` as is (its maker escaped what it quotes).
        The same `txn_id` sent again returns the first event instead of a second one."""
        await self._ensure_members(room_id)
        content = TextMessageEventContent(msgtype=MessageType.NOTICE, body=text)
        if html is not None:
            content.format = Format.HTML
            content.formatted_body = html
            if mentions:
                content["m.mentions"] = {"user_ids": list(mentions)}
        elif mentions:
            body_html = escape(text).replace("\n", "<br>")
            for user_id in mentions:
                pill = f'<a href="https://matrix.to/#/{escape(user_id)}">{escape(user_id)}</a>'
                body_html = body_html.replace(escape(user_id), pill)
            content.format = Format.HTML
            content.formatted_body = body_html
            content["m.mentions"] = {"user_ids": list(mentions)}
        if txn_id is not None:
            return str(
                await self.client.send_message_event(
                    RoomID(room_id), EventType.ROOM_MESSAGE, content, txn_id=txn_id
                )
            )
        return str(
            await retry_rate_limited(lambda: self.client.send_message(RoomID(room_id), content))
        )

    async def redact(
        self, room_id: str, event_id: str, reason: str, *, txn_id: str | None = None
    ) -> EffectResult:
        """Redact `event_id`; the same `txn_id` sent again returns the first redaction."""
        if self.dry_run:
            log.info("dry-run: would redact %s in %s", event_id, room_id)
            return EffectResult(False)
        if txn_id is None:
            redaction = await self.client.redact(RoomID(room_id), EventID(event_id), reason=reason)
            return EffectResult(True, str(redaction))
        # mautrix's redact() always makes up its own transaction ID.
        response = await self.client.api.request(
            Method.PUT,
            Path.v3.rooms[RoomID(room_id)].redact[EventID(event_id)][txn_id],
            content={"reason": reason},
        )
        return EffectResult(True, str(response["event_id"]))

    async def set_state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> EffectResult:
        if self.dry_run:
            log.info("dry-run: would set %s in %s", event_type, room_id)
            return EffectResult(False)
        event_id = await self.client.send_state_event(
            RoomID(room_id),
            EventType.find(event_type, EventType.Class.STATE),
            content,
            state_key=state_key,
        )
        return EffectResult(True, str(event_id))

    async def default_room_version(self) -> str:
        """The room version the homeserver gives new rooms (`/capabilities`; "1" if unsaid)."""
        caps = await self.client.api.request(Method.GET, Path.v3.capabilities)
        versions = caps.get("capabilities", {}).get("m.room_versions", {})
        default = versions.get("default") if isinstance(versions, dict) else None
        return default if isinstance(default, str) else "1"

    async def create_room(
        self,
        *,
        room_version: str,
        invite: Sequence[str],
        initial_state: Sequence[dict[str, Any]],
        power_levels: dict[str, Any],
        name: str | None = None,
    ) -> EffectResult:
        """Create a room with the bot as its creator; `event_id` of the result is the room ID."""
        if self.dry_run:
            log.info("dry-run: would create a room and invite %d user(s)", len(invite))
            return EffectResult(False)
        room_id = await retry_rate_limited(
            lambda: self.client.create_room(
                preset=RoomCreatePreset.PRIVATE,
                name=name,
                invitees=[UserID(u) for u in invite],
                initial_state=list(initial_state),
                room_version=room_version,
                power_level_override=power_levels,
            )
        )
        return EffectResult(True, str(room_id))

    async def kick(self, room_id: str, user_id: str, reason: str) -> EffectResult:
        if self.dry_run:
            log.info("dry-run: would remove %s from %s", user_id, room_id)
            return EffectResult(False)
        await self.client.kick_user(RoomID(room_id), UserID(user_id), reason=reason)
        return EffectResult(True)

    async def purge_history(self, room_id: str, up_to_event_id: str) -> EffectResult:
        """Start Synapse's admin purge of the room's history before `up_to_event_id` (kept);
        `event_id` of the result is the purge ID to poll."""
        if self.dry_run:
            log.info("dry-run: would purge history of %s", room_id)
            return EffectResult(False)
        purge_id = await SynapseAdmin(self.gateway).start_purge(room_id, up_to_event_id)
        return EffectResult(True, purge_id)

    async def exempt_from_rate_limits(self) -> None:
        """Lift Synapse's rate limits for the bot's own account (needs homeserver.admin_token),
        so redactions of violations are never paced by 429s."""
        await SynapseAdmin(self.gateway).exempt_from_rate_limits(str(self.gateway.user_id))

    async def upload_file(self, room_id: str, data: bytes, filename: str, mimetype: str) -> str:
        """Upload and post a file; encrypted (EncryptedFile) when the room is encrypted."""
        await self._ensure_members(room_id)
        content = MediaMessageEventContent(msgtype=MessageType.FILE, body=filename)
        content.info = {"mimetype": mimetype, "size": len(data)}  # type: ignore[assignment]
        if await self.gateway.is_encrypted(room_id):
            ciphertext, file_info = encrypt_attachment(data)
            file_info.url = await self.client.upload_media(
                ciphertext, mime_type="application/octet-stream", filename=filename
            )
            content.file = file_info
        else:
            content.url = await self.client.upload_media(
                data, mime_type=mimetype, filename=filename
            )
        return str(await self.client.send_message(RoomID(room_id), content))
