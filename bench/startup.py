"""Start-up figures: Synapse to healthy, and the bot from start to its first processed sync.

    python bench/startup.py [--repeats 3]

The baseline, measured in the same run against the same Synapse, is a bare mautrix client
(no E2EE, no database) logging in and completing one sync: the ratio is what E2EE set-up,
migrations, cross-signing and the audited first batch cost on top of that.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import pgserver
import yaml
from _common import fresh_database
from mautrix.client import ClientAPI
from mautrix.types import UserID

from bot.app import Chaperone
from bot.config import load_config
from bot.devtools.synapse import start_synapse


async def baseline(base_url: str, user_id: str, password: str) -> float:
    started = time.monotonic()
    api = ClientAPI(UserID(user_id), base_url=base_url)
    try:
        await api.login(password=password)
        await api.sync(timeout=0)
        return time.monotonic() - started
    finally:
        await api.api.session.close()


async def bot_first_sync(
    base_url: str, db_url: str, user_id: str, password: str, d: Path
) -> float:
    config_path = d / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "homeserver": {"url": base_url},
                "bot": {"user_id": user_id, "password": password, "data_dir": str(d / "data")},
                "encryption": {"pickle_key": secrets.token_urlsafe(24)},
                "database": {"url": db_url},
                "audit": {"hmac_key": secrets.token_urlsafe(32)},
                "http": {"listen": "127.0.0.1:0"},
            }
        )
    )
    bot = Chaperone(load_config(config_path))
    stop = asyncio.Event()
    task = asyncio.create_task(bot.run_until_stopped(stop))
    while not bot.started.is_set() or not bot.parts.sync_loop.first_batch_done.is_set():
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    seconds = bot.parts.sync_loop.first_batch_seconds or 0.0
    stop.set()
    await task
    return seconds


async def main(repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as tmp:
        root = Path(tmp)
        synapse_times = []
        synapse = await start_synapse(root / "synapse")
        synapse_times.append(synapse.start_seconds)
        pg_started = time.monotonic()
        pg = await asyncio.to_thread(pgserver.get_server, root / "pg", cleanup_mode="stop")
        pg_url = pg.get_uri()
        pg_seconds = time.monotonic() - pg_started
        try:
            bot_times, base_times = [], []
            for i in range(repeats):
                password = secrets.token_urlsafe(12)
                user = await synapse.register(f"bench-bot-{i}", password)
                base_user = await synapse.register(f"bench-base-{i}", password)
                base_times.append(await baseline(synapse.base_url, base_user, password))
                run_dir = root / f"run{i}"
                run_dir.mkdir()
                db_url = await fresh_database(pg_url, f"bench{i}")
                bot_times.append(
                    await bot_first_sync(synapse.base_url, db_url, user, password, run_dir)
                )
        finally:
            synapse.stop()
            pg.cleanup()
        for _ in range(repeats - 1):
            again = await start_synapse(root / f"synapse-again-{_}")
            synapse_times.append(again.start_seconds)
            again.stop()
    bot_s, base_s = statistics.median(bot_times), statistics.median(base_times)
    print(
        f"synapse start to healthy:       median {statistics.median(synapse_times):.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in synapse_times)})"
    )
    print(f"embedded postgres start:        {pg_seconds:.2f} s (first start, initdb included)")
    print(
        f"bot start to first sync:        median {bot_s:.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in bot_times)})"
    )
    print(f"baseline login + one sync:      median {base_s:.3f} s")
    print(f"ratio bot / baseline:           {bot_s / base_s:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(main(parser.parse_args().repeats))
