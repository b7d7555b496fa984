"""A Chaperone configured against the test Synapse and a fresh database, in-process or as a
real `chaperone run` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.app import Chaperone
from bot.config import Config, load_config
from bot.devtools.synapse import SynapseServer

HMAC_KEY = "test-hmac-key-" + "k" * 24
API_TOKEN = "test-api-token-" + "t" * 24


@dataclass
class BotEnv:
    """Users and a config for one bot under test."""

    synapse: SynapseServer
    data_dir: Path
    config_path: Path
    bot_user: str
    admin: tuple[str, str]
    staff: tuple[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def write_config(self, **overrides: Any) -> None:
        data = yaml.safe_load(self.config_path.read_text())
        for dotted, value in overrides.items():
            section, key = dotted.split("__")
            data.setdefault(section, {})[key] = value
        self.config_path.write_text(yaml.safe_dump(data))


def base_config(
    synapse: SynapseServer,
    db_url: str,
    data_dir: Path,
    bot_user: str,
    bot_password: str,
    admins: list[str],
    staff: list[str],
) -> dict[str, Any]:
    return {
        "homeserver": {"url": synapse.base_url},
        "bot": {
            "user_id": bot_user,
            "password": bot_password,
            "data_dir": str(data_dir),
            "admin_min_trust": "any",
        },
        "encryption": {"pickle_key": secrets.token_urlsafe(24)},
        "database": {"url": db_url},
        "roles": {"admins": admins, "staff": staff},
        "audit": {"hmac_key": HMAC_KEY},
        "http": {"listen": "127.0.0.1:0", "api_token": API_TOKEN},  # any free port
        "logging": {"level": "INFO"},
    }


class RunningBot:
    """A Chaperone running in this event loop."""

    def __init__(self, config: Config) -> None:
        self.app = Chaperone(config)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30) -> RunningBot:
        self._task = asyncio.create_task(self.app.run_until_stopped(self._stop))
        deadline = asyncio.get_running_loop().time() + timeout
        while (
            not self.app.started.is_set() or not self.app.parts.sync_loop.first_batch_done.is_set()
        ):
            if self._task.done():
                self._task.result()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the bot did not process its first sync in time")
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class BotProcess:
    """`chaperone run -c` as a child process, for crash and restart tests."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        log.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.kill()
                self.proc.wait(10)
