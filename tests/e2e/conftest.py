from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from bot.devtools.synapse import SynapseServer
from tests.e2e.bot_env import BotEnv, RunningBot, base_config
from tests.fixtures_synapse import MakeUser


@pytest.fixture
async def bot_env(
    synapse: SynapseServer, db_url: str, tmp_path: Path, make_user: MakeUser
) -> BotEnv:
    bot_user, bot_password = await make_user("chaperone")
    admin = await make_user("admin")
    staff = await make_user("therapist")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            base_config(
                synapse, db_url, tmp_path / "data", bot_user, bot_password, [admin[0]], [staff[0]]
            )
        )
    )
    return BotEnv(synapse, tmp_path / "data", config_path, bot_user, admin, staff)


@pytest.fixture
async def running_bot(bot_env: BotEnv) -> AsyncIterator[RunningBot]:
    bot = await RunningBot(bot_env.config).start()
    try:
        yield bot
    finally:
        await bot.stop()
