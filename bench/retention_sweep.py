"""Retention sweep rate: redactions per second with and without Synapse's rate limits.

    python bench/retention_sweep.py [--messages 300] [--limited-messages 30]

Two throwaway Synapses (one with every rate limit raised out of reach, one with Synapse's
defaults, as in production) and an embedded Postgres. In each, a patient's messages (the
senders are exempted from limits, so only the bot's removals are paced) grow older than a 1 s
retention, then one sweep of the room is timed: archive off, method redact, as a clinic runs
it by default. With the defaults on, Synapse allows the bot ~0.2 redactions/s after a burst of
10 (`rc_message`; `rc_admin_redaction` falls back to it): exempt the bot account in production
(`POST /_synapse/admin/v1/users/<bot>/override_ratelimit`) if sweeps must keep up.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pgserver
import yaml
from _common import fresh_database

from bot.app import Chaperone
from bot.config import load_config
from bot.devtools.synapse import SynapseServer, start_synapse
from bot.service.retention import SweepRequest


async def register(server: SynapseServer, name: str, *, admin: bool = False) -> dict[str, Any]:
    """Shared-secret registration; the answer carries an access token (no login needed)."""
    password = secrets.token_urlsafe(12)
    data = await server.register_account(name, password, admin=admin)
    data["password"] = password
    return data


async def call(server: SynapseServer, token: str, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            f"{server.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data


async def sweep_rate(server: SynapseServer, db_url: str, workdir: Path, messages: int) -> float:
    admin = await register(server, "bench-admin", admin=True)
    staff = await register(server, "bench-staff")
    patient = await register(server, "bench-patient")
    bot = await register(server, "bench-bot")
    for user in (staff, patient):  # only the bot's own removals should meet the limits
        await call(
            server,
            admin["access_token"],
            "POST",
            f"/_synapse/admin/v1/users/{user['user_id']}/override_ratelimit",
            {"messages_per_second": 0, "burst_count": 0},
        )
    room = await call(
        server,
        staff["access_token"],
        "POST",
        "/_matrix/client/v3/createRoom",
        {
            "preset": "private_chat",
            "invite": [patient["user_id"], bot["user_id"]],
            "power_level_content_override": {"users": {bot["user_id"]: 100}},
        },
    )
    room_id = room["room_id"]
    await call(server, patient["access_token"], "POST", f"/_matrix/client/v3/join/{room_id}", {})

    config_path = workdir / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "homeserver": {"url": server.base_url},
                "bot": {
                    "user_id": bot["user_id"],
                    "password": bot["password"],
                    "data_dir": str(workdir / "data"),
                },
                "encryption": {"pickle_key": secrets.token_urlsafe(24)},
                "database": {"url": db_url},
                "roles": {"admins": [staff["user_id"]], "staff": [staff["user_id"]]},
                "defaults": {"consent": "off", "retention": "1s"},
                "retention": {"minimum": "1s", "sweep_interval": "1h"},
                "audit": {"hmac_key": secrets.token_urlsafe(32)},
                "http": {"listen": "127.0.0.1:0"},
                "logging": {"level": "WARNING"},
            }
        )
    )
    app = Chaperone(load_config(config_path))
    stop = asyncio.Event()
    task = asyncio.create_task(app.run_until_stopped(stop))
    try:
        while not app.started.is_set() or room_id not in await app.parts.rooms.managed():
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        for i in range(messages):
            await call(
                server,
                patient["access_token"],
                "PUT",
                f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/bench{i}",
                {"msgtype": "m.text", "body": f"message {i}"},
            )
        # Tracked through sync, then older than the 1 s retention.
        while (await app.parts.retention.preview(room_id))[0].count < messages:
            await asyncio.sleep(0.1)
        started = time.monotonic()
        (result,) = await app.parts.retention.sweep(SweepRequest((room_id,), requested_by="bench"))
        seconds = time.monotonic() - started
    finally:
        stop.set()
        await task
    assert result.failed == 0 and result.error is None, result
    rate = result.removed / seconds
    print(
        f"  {result.removed} removed in {seconds:.1f} s = {rate:.2f}/s; "
        f"{result.waits} rate-limit waits, {result.waited_seconds:.1f} s waited"
    )
    return rate


async def main(messages: int, limited_messages: int) -> None:
    with tempfile.TemporaryDirectory(prefix="chaperone-bench-") as tmp:
        root = Path(tmp)
        pg = await asyncio.to_thread(pgserver.get_server, root / "pg", cleanup_mode="stop")
        try:
            rates = []
            for name, limits, count in (
                ("no rate limits", False, messages),
                ("Synapse default rate limits", True, limited_messages),
            ):
                print(f"{name}:")
                server = await start_synapse(root / name.split()[0], rate_limits=limits)
                try:
                    workdir = root / f"bot-{len(rates)}"
                    workdir.mkdir()
                    db_url = await fresh_database(pg.get_uri(), f"bench{len(rates)}")
                    rates.append(await sweep_rate(server, db_url, workdir, count))
                finally:
                    server.stop()
        finally:
            pg.cleanup()
    print(f"redactions per second without rate limits: {rates[0]:.2f}")
    print(f"redactions per second with rate limits:    {rates[1]:.2f}")
    print(f"ratio:                                     {rates[0] / rates[1]:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--limited-messages", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.limited_messages))
