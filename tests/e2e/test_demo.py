"""`chaperone demo` starts everything, answers in the demo room, and Ctrl-C leaves nothing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from mautrix.types import RoomID

from bot.devtools.e2ee_client import E2EEClient


async def test_demo_answers_help_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--data-dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = None
    try:
        lines: list[str] = []
        started = time.monotonic()
        while not lines or lines[-1].strip() != "DEMO READY":
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            assert line, "demo exited early:\n" + "".join(lines)
            lines.append(line)
        ready_seconds = time.monotonic() - started
        text = "".join(lines)
        homeserver = re.search(r"Homeserver:\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        room_id = RoomID(re.search(r"Demo room:\s+(\S+)", text).group(1))  # type: ignore[union-attr]
        users = dict(re.findall(r"user (@\S+)\s+password (\S+)", text))
        assert set(u.split(":")[0] for u in users) == {"@admin", "@therapist", "@patient"}

        therapist = next(u for u in users if u.startswith("@therapist"))
        client = await E2EEClient.login(homeserver, therapist, users[therapist])
        await client.send_text(room_id, "!chaperone help")
        reply = await client.wait_for_message(  # (the consent terms come first)
            room_id,
            sender="@chaperone:localhost",
            predicate=lambda e: "Commands you can use" in e.content.body,
            timeout=30,
        )
        assert "!chaperone status" in reply.content.body  # the therapist is staff
        print(f"demo ready in {ready_seconds:.1f} s")

        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the demo should run Synapse and Postgres as children"
    finally:
        if client is not None:
            await client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    deadline = time.monotonic() + 10
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        assert time.monotonic() < deadline, f"left behind: {[c.pid for c in children]}"
        await asyncio.sleep(0.1)
    assert not os.path.exists(tmp_path / "demo" / "postgres" / "postgres" / "postmaster.pid")
