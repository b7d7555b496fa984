"""The log says a thing once, not once per message (issue 11)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.bot_env import BotEnv, RunningBot
from tests.e2e.test_foundation import staffed_room, wait_rows
from tests.fixtures_synapse import MakeE2EEUser


async def test_a_sender_without_cross_signing_keys_is_warned_about_once(
    bot_env: BotEnv,
    running_bot: RunningBot,
    e2ee_user: MakeE2EEUser,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    _staff, patient, room_id = await staffed_room(bot_env, e2ee_user, running_bot)
    sent = [await patient.send_text(room_id, f"message {i}") for i in range(5)]
    assert len(await wait_rows(db_url, "message.sent", event_id=sent[-1])) == 1
    warned = Counter(
        r.getMessage().rsplit(" of ", 1)[-1]
        for r in caplog.records
        if r.name == "mau.crypto"  # the bot's (the test clients log under mau.devtools)
        and r.getMessage().startswith("Didn't find cross-signing key")
    )
    assert warned[patient.user_id] <= 1
