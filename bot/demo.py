"""`chaperone demo`: a throwaway Synapse on 127.0.0.1, an embedded Postgres, three users, an
encrypted demo room and the bot running in it — ready to log in to with Element."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bot.config import load_config

DEMO_USERS = ("admin", "therapist", "patient")
ENCRYPTION_STATE: dict[str, Any] = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}
BOT_LOCALPART = "chaperone"


def demo_config(
    base_url: str, server_name: str, bot_password: str, data_dir: Path
) -> dict[str, Any]:
    """A complete config for the demo; secrets are fresh random values."""
    return {
        "homeserver": {"url": base_url},
        "bot": {
            "user_id": f"@{BOT_LOCALPART}:{server_name}",
            "password": bot_password,
            "data_dir": str(data_dir / "bot"),
            "admin_min_trust": "any",  # Element users in a demo have not cross-signed yet
        },
        "encryption": {"pickle_key": secrets.token_urlsafe(24)},
        "database": {"url": ""},
        "roles": {
            "admins": [f"@admin:{server_name}"],
            "staff": [f"@therapist:{server_name}"],
        },
        "audit": {"hmac_key": secrets.token_urlsafe(32)},
        "http": {"listen": "127.0.0.1:0"},
    }


async def run_demo(data_dir_arg: str | None) -> int:
    from bot.app import Chaperone
    from bot.devtools.synapse import start_synapse
    from bot.logging_setup import setup_logging

    temp = data_dir_arg is None
    data_dir = Path(data_dir_arg or tempfile.mkdtemp(prefix="chaperone-demo-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    print(f"Starting a local Synapse and Postgres under {data_dir} ...", flush=True)
    synapse = await start_synapse(data_dir / "synapse")
    bot: Chaperone | None = None
    try:
        passwords = {name: secrets.token_urlsafe(9) for name in DEMO_USERS}
        bot_password = secrets.token_urlsafe(18)
        for name, password in passwords.items():
            await synapse.register(name, password, admin=name == "admin")
        await synapse.register(BOT_LOCALPART, bot_password)

        config_path = data_dir / "config.yaml"
        config_path.write_text(
            yaml.safe_dump(
                demo_config(synapse.base_url, synapse.server_name, bot_password, data_dir)
            )
        )
        config_path.chmod(0o600)
        config = load_config(config_path)
        setup_logging("WARNING", config.secret_values())
        bot = Chaperone(config)
        bot_task = asyncio.create_task(bot.run_until_stopped(stop))
        started = asyncio.create_task(bot.started.wait())
        await asyncio.wait([started, bot_task], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        room_id = await _make_demo_room(synapse, passwords)

        print(f"""
Chaperone demo is running. Nothing leaves this machine.

  Homeserver:  {synapse.base_url}   (server name: {synapse.server_name})
  Demo room:   {room_id}  "Chaperone demo" (end-to-end encrypted)
""")
        for name in DEMO_USERS:
            print(f"  user {synapse.user_id(name):28} password {passwords[name]}")
        print(
            f"""
Log in with Element (Element Desktop, or Element Web served locally): choose "Edit" next to
the homeserver, enter {synapse.base_url}, then sign in as one of the users above. In the demo
room send "{config.bot.command_prefix} help".

Try a room born compliant: as the therapist, send in the demo room
  {config.bot.command_prefix} room new {synapse.user_id("patient")} name="Therapy with the patient"
The bot creates an encrypted, invite-only room (posture passes), invites you both and answers
with a matrix.to link; sign in as the patient, accept the invite, and the consent terms arrive.
Config used: {config_path}    Press Ctrl-C to stop everything.
DEMO READY""",
            flush=True,
        )
        await bot_task
    finally:
        if bot is not None:
            await bot.stop()
        synapse.stop()
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
        print("Demo stopped.", flush=True)
    return 0


async def _make_demo_room(synapse: Any, passwords: dict[str, str]) -> str:
    """The admin creates the encrypted room and invites everyone; the others join."""
    from mautrix.client import ClientAPI
    from mautrix.types import RoomID, UserID

    apis: dict[str, ClientAPI] = {}
    try:
        for name in DEMO_USERS:
            token, device = await synapse.login(synapse.user_id(name), passwords[name])
            apis[name] = ClientAPI(
                UserID(synapse.user_id(name)), base_url=synapse.base_url, token=token
            )
        room_id = await apis["admin"].create_room(
            name="Chaperone demo",
            invitees=[UserID(synapse.user_id(n)) for n in ("therapist", "patient")]
            + [UserID(synapse.user_id(BOT_LOCALPART))],
            initial_state=[ENCRYPTION_STATE],
        )
        for name in ("therapist", "patient"):
            await apis[name].join_room_by_id(RoomID(room_id))
        return str(room_id)
    finally:
        for api in apis.values():
            with contextlib.suppress(Exception):
                await api.logout()  # the set-up devices should not linger in Element's list
            with contextlib.suppress(Exception):
                await api.api.session.close()
