"""Helpers for the admin-surface end-to-end tests: a bot with a management room, and commands
sent by a real E2EE client with the bot's reply awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mautrix.types import EventType, MessageEvent, RoomID

from bot.devtools.e2ee_client import E2EEClient
from tests.e2e.bot_env import BotEnv, RunningBot
from tests.fixtures_synapse import MakeE2EEUser


@asynccontextmanager
async def bot_with_management_room(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, **config: Any
) -> AsyncIterator[tuple[RunningBot, E2EEClient, RoomID]]:
    """The admin's encrypted management room, the bot invited there before it starts (it joins
    at start), and `config` overrides (`section__key=value`)."""
    admin = await e2ee_user(credentials=bot_env.admin)
    management = await admin.create_room(invite=[bot_env.bot_user], name="management")
    bot_env.write_config(bot__management_room=str(management), **config)
    bot = await RunningBot(bot_env.config).start()
    try:
        await admin.wait_for_membership(management, bot_env.bot_user, "join")
        yield bot, admin, management
    finally:
        await bot.stop()


async def ask(
    client: E2EEClient, room_id: RoomID, command: str, expect: str, bot_user: str
) -> MessageEvent:
    """Send `!chaperone <command>` and wait for the bot's reply containing `expect`."""
    await client.send_text(room_id, f"!chaperone {command}")
    return await client.wait_for_message(
        room_id, sender=bot_user, predicate=lambda e: expect in (e.content.body or "")
    )


async def set_power(client: E2EEClient, room_id: RoomID, user_id: str, level: int) -> None:
    levels: Any = await client.client.get_state_event(room_id, EventType.ROOM_POWER_LEVELS)
    content = levels.serialize()
    content.setdefault("users", {})[user_id] = level
    await client.client.send_state_event(room_id, EventType.ROOM_POWER_LEVELS, content)


async def state_content(client: E2EEClient, room_id: RoomID, event_type: str) -> dict[str, Any]:
    evt: Any = await client.client.get_state_event(
        room_id, EventType.find(event_type, EventType.Class.STATE)
    )
    return dict(evt.serialize())
