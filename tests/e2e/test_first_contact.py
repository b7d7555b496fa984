"""A sender's first encrypted messages in several rooms at once: every room key is kept
(mautrix runs to-device handlers as background tasks; decrypted at once, the olm messages of
one device all missed the session the first one creates, and all but one key were lost)."""

from __future__ import annotations

from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import audit_rows, wait_rows
from tests.e2e.test_late_keys import pending_count
from tests.fixtures_synapse import MakeE2EEUser


async def test_room_keys_arriving_together_are_all_kept(
    bot_env: BotEnv, e2ee_user: MakeE2EEUser, db_url: str
) -> None:
    staff = await e2ee_user(credentials=bot_env.staff)
    bot = await RunningBot(bot_env.config).start()
    rooms = [await staff.create_room(invite=[bot_env.bot_user]) for _ in range(4)]
    for room_id in rooms:
        await staff.wait_for_membership(room_id, bot_env.bot_user, "join")
    await bot.stop()

    # While the bot is away the staff member writes in every room: each first message sends
    # the room key to the bot's device as an olm message, all in the bot's next sync.
    sent = [await staff.send_text(room_id, "first words here") for room_id in rooms]
    bot = await RunningBot(bot_env.config).start()
    try:
        for event_id in sent:
            assert len(await wait_rows(db_url, "message.sent", event_id=event_id)) == 1
        assert await audit_rows(db_url, "decryption.failed") == []
        assert await pending_count(db_url) == 0
    finally:
        await bot.stop()
