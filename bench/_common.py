"""Shared by the benchmark scripts (run as `python bench/<name>.py`)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from yarl import URL


async def fresh_database(server_url: str, name: str) -> str:
    """Create database `name` on the server (a superuser URL) and return its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = URL(server_url)
    return str(url.with_path("/" + name).with_query(url.query))


# ---- shared by pipeline.py, violation.py, verify.py, rooms.py -----------------------------

BENCH_HMAC_KEY = "bench-hmac-key-" + "k" * 24
BENCH_API_TOKEN = "bench-api-token-" + "t" * 24
REPO = Path(__file__).resolve().parent.parent


def start_postgres(data_dir: Path) -> tuple[Any, str]:
    """A throwaway embedded Postgres with its default, durable settings (fsync on, as in
    production; the test suite turns it off). Returns (server, superuser URL); call
    ``server.cleanup()``."""
    import pgserver

    server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    return server, server.get_uri()


async def postgres_settings(url: str) -> str:
    """One line naming the Postgres version and its durability settings, for the report."""
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        got = {s: await conn.fetchval(f"SHOW {s}") for s in ("fsync", "synchronous_commit")}
    finally:
        await conn.close()
    if got["fsync"] != "on":
        raise SystemExit(f"Postgres runs with fsync={got['fsync']}: the figures would lie")
    durability = f"fsync={got['fsync']}, synchronous_commit={got['synchronous_commit']}"
    return f"Postgres {version}, {durability}"


async def drop_database(server_url: str, url: str) -> None:
    name = URL(url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def register(server: Any, prefix: str, *, admin: bool = False) -> dict[str, Any]:
    """Shared-secret registration of ``<prefix>-<random>``: user_id, password, access_token,
    device_id (no login needed, so no login rate limit is spent)."""
    localpart = f"{re.sub(r'[^a-z0-9._=-]', '', prefix.lower())}-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(12)
    data: dict[str, Any] = await server.register_account(localpart, password, admin=admin)
    data["password"] = password
    return data


class Api:
    """A plain (unencrypted) client-server API caller with one access token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def exempt(self, user_id: str) -> None:
        """Lift Synapse's rate limits for ``user_id`` (this token must be a server admin's)."""
        await self.call(
            "POST",
            f"/_synapse/admin/v1/users/{user_id}/override_ratelimit",
            {"messages_per_second": 0, "burst_count": 0},
        )

    async def create_room(
        self, invite: Sequence[str], power: Sequence[str] | None = None, **extra: Any
    ) -> str:
        """A private, encrypted (megolm) room; `power` (default: the invitees) get 100."""
        body: dict[str, Any] = {
            "preset": "private_chat",
            "invite": list(invite),
            # Compliant posture (encrypted, history `joined`, no guests): no drift notices.
            "initial_state": [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                },
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": "joined"},
                },
                {
                    "type": "m.room.guest_access",
                    "state_key": "",
                    "content": {"guest_access": "forbidden"},
                },
            ],
            "power_level_content_override": {
                "users": {u: 100 for u in (invite if power is None else power)}
            },
            **extra,
        }
        return str((await self.call("POST", "/_matrix/client/v3/createRoom", body))["room_id"])

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"/_matrix/client/v3/join/{room_id}", {})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def write_bot_config(
    path: Path,
    *,
    base_url: str,
    db_url: str,
    bot: dict[str, Any],
    admins: Sequence[str] = (),
    staff: Sequence[str] = (),
    consent: str = "off",
    admin_token: str = "",
    level: str = "INFO",
) -> Path:
    """A bot config like the tests' base config (tests/e2e/bot_env.py), for `chaperone run`."""
    path.write_text(
        yaml.safe_dump(
            {
                "homeserver": {"url": base_url, "admin_token": admin_token},
                "bot": {
                    "user_id": bot["user_id"],
                    "password": bot["password"],
                    "data_dir": str(path.parent / "data"),
                    "admin_min_trust": "any",
                },
                "encryption": {"pickle_key": secrets.token_urlsafe(24)},
                "database": {"url": db_url},
                "roles": {"admins": list(admins), "staff": list(staff)},
                "defaults": {"consent": consent},
                "audit": {"hmac_key": BENCH_HMAC_KEY},
                "http": {"listen": "127.0.0.1:0", "api_token": BENCH_API_TOKEN},
                "logging": {"level": level},
            }
        )
    )
    return path


_COMPILED: list[bool] = []


def bot_env() -> dict[str, str]:
    """The environment a spawned bot runs with: its modules' bytecode compiled beforehand, as
    a wheel install (pip) leaves it in production. Without this, a machine exporting
    PYTHONDONTWRITEBYTECODE=1 (this one does) compiles all of bot/ from source at every spawn,
    which no deployment does. bot/ is compiled once per benchmark, into its __pycache__
    directories (ignored by git), where the installed packages keep theirs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not _COMPILED:
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "compileall", "-q", str(REPO / "bot")], env=env, check=True
        )
        _COMPILED.append(True)
    return env


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGTERM when the benchmark dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


@dataclass
class BotProcess:
    """`chaperone run -c CONFIG` as a child process (as in production), its log in a file."""

    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    log_offset: int = 0  # where this run's lines start in the (appended) log

    def start(self) -> BotProcess:
        env = bot_env()  # before the clock starts: compiling is not the bot's start-up
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            self.started = time.monotonic()
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "bot", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = "\n".join(self.log_text().splitlines()[-30:])
            raise RuntimeError(f"the bot exited with {self.proc.returncode}:\n{tail}")

    async def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until this run's log has a line matching ``pattern``; polls every 20 ms."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                found = regex.search(log.read().decode(errors="replace"))
            if found:
                return found
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matching {pattern!r} in {timeout} s")
            await asyncio.sleep(0.02)

    def memory_kib(self) -> dict[str, int]:
        """VmHWM (peak RSS) and VmRSS of the process, in KiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
        return out

    def stop(self) -> None:
        """SIGTERM (an orderly stop), SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least squares y = a + b·x; returns (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


@dataclass
class Row:
    """One line of a results table."""

    figure: str
    measured: str
    reference: str = ""
    """The baseline or ceiling, measured in the same run."""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    title: str
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.rows.append(Row(*args, **kwargs))

    def print(self) -> None:
        head = ("figure", "measured", "baseline/ceiling (same run)", "ratio", "target", "")
        cells = [
            (
                r.figure,
                r.measured,
                r.reference,
                r.ratio,
                r.target,
                "" if r.ok is None else ("PASS" if r.ok else "MISS"),
            )
            for r in self.rows
        ]
        widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
        print()
        print(f"== {self.title}")
        for note in self.notes:
            print(f"   {note}")
        for line in [head, tuple("-" * w for w in widths), *cells]:
            print("  " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
        sys.stdout.flush()


def quiet_mautrix() -> None:
    """The senders' mautrix warnings (unverified devices and the like) stay out of the report."""
    logging.basicConfig(level=logging.ERROR)


def env_line() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"at start; Python {sys.version.split()[0]}"
    )
