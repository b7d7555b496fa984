"""A throwaway Synapse homeserver: for the end-to-end tests and for ``chaperone demo``.

The server runs as a child process in its own process group, listens on loopback only, stores
everything (SQLite database, media, signing key, log) in one directory and has no federation
listener. It is for local use only: never expose it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import hashlib
import hmac
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

__all__ = ["SynapseError", "SynapseServer", "start_synapse"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3

# Every rate limiter of Synapse 1.163 (synapse/config/ratelimiting.py), raised far above anything
# a test suite does. Production keeps the defaults, so one test keeps them on too.
_UNLIMITED: dict[str, float] = {"per_second": 100_000.0, "burst_count": 1_000_000}
_NO_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_admin_redaction": _UNLIMITED,
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 100_000,
        "sleep_delay": 0,
        "reject_limit": 100_000,
        "concurrent": 1000,
    },
}


class SynapseError(RuntimeError):
    """Synapse failed to start, or refused an admin request."""


@dataclass
class SynapseServer:
    """A running throwaway Synapse; ``stop()`` it (it is also stopped at interpreter exit)."""

    base_url: str
    server_name: str
    shared_secret: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    start_seconds: float = 0.0
    """Seconds from spawning the process until both /health and the client API answered."""
    log_path: Path = field(default=Path())
    _console: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    async def register(self, localpart: str, password: str, admin: bool = False) -> str:
        """Create a user through the shared-secret admin API and return its user ID.

        An already existing user is not an error: its ID is returned (the password is not checked).
        """
        account = await self.register_account(localpart, password, admin=admin, existing_ok=True)
        return str(account["user_id"])

    async def register_account(
        self, localpart: str, password: str, *, admin: bool = False, existing_ok: bool = False
    ) -> dict[str, Any]:
        """Shared-secret registration; Synapse's answer (user_id, access_token, device_id), so
        no login (and no login rate limit) is needed. With `existing_ok`, an existing user gives
        just its user_id."""
        url = f"{self.base_url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                nonce = (await _json_or_raise(resp, "registration nonce"))["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            for part in (nonce, localpart, password):
                mac.update(part.encode())
                mac.update(b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            async with session.post(url, json=body) as resp:
                if resp.status == 400 and existing_ok:
                    data = await resp.json()
                    if data.get("errcode") == "M_USER_IN_USE":
                        return {"user_id": self.user_id(localpart)}
                account: dict[str, Any] = await _json_or_raise(resp, "registration")
                return account

    async def login(self, user_id: str, password: str) -> tuple[str, str]:
        """Log in with a password; return ``(access_token, device_id)`` of a new device."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.base_url}/_matrix/client/v3/login", json=body) as resp:
                data = await _json_or_raise(resp, "login")
        return str(data["access_token"]), str(data["device_id"])

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of Synapse's log and console output, for error messages."""
        return _tail(self.log_path, lines) + _tail(self.data_dir / "console.log", lines)

    def stop(self) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after a timeout."""
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        try:
            if self.process.poll() is None:
                _signal_group(self.process, signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _signal_group(self.process, signal.SIGKILL)
                    self.process.wait(timeout=STOP_TIMEOUT)
        finally:
            if self._console is not None:
                self._console.close()
                self._console = None


async def start_synapse(
    data_dir: Path,
    *,
    port: int | None = None,
    rate_limits: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    server_name: str = "localhost",
) -> SynapseServer:
    """Start Synapse with its state in ``data_dir`` and wait until its client API answers.

    ``rate_limits=False`` raises every rate limiter out of reach; ``True`` keeps Synapse's
    defaults, as in production. ``extra_config`` is merged (recursively) over the generated
    homeserver.yaml. A ``data_dir`` from an earlier run is reused (users, rooms, signing key).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else _free_port()
        try:
            return await _start_once(
                data_dir, chosen, rate_limits, extra_config or {}, server_name
            )
        except _PortTaken:
            if attempt == attempts:
                raise SynapseError(f"port {chosen} is already in use") from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


async def _start_once(
    data_dir: Path,
    port: int,
    rate_limits: bool,
    extra_config: Mapping[str, Any],
    server_name: str,
) -> SynapseServer:
    shared_secret = secrets.token_hex(32)
    log_path = data_dir / "homeserver.log"
    config_path = data_dir / "homeserver.yaml"
    config = _homeserver_config(data_dir, port, server_name, shared_secret, log_path)
    if not rate_limits:
        config = _merged(config, _NO_RATE_LIMITS)
    config = _merged(config, extra_config)
    _write_private(config_path, yaml.safe_dump(config, sort_keys=False))
    _write_private(data_dir / "log_config.yaml", yaml.safe_dump(_log_config(log_path)))

    console = (data_dir / "console.log").open("ab")
    started = time.monotonic()
    # No --generate-keys pass: the default mode generates the missing signing key and runs,
    # which saves a second interpreter start-up.
    process = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
        [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config_path)],
        cwd=data_dir,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent(),
    )
    server = SynapseServer(
        base_url=f"http://127.0.0.1:{port}",
        server_name=server_name,
        shared_secret=shared_secret,
        data_dir=data_dir,
        process=process,
        log_path=log_path,
        _console=console,
    )
    atexit.register(server.stop)
    try:
        await _wait_ready(server, START_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    server.start_seconds = time.monotonic() - started
    return server


def _homeserver_config(
    data_dir: Path, port: int, server_name: str, shared_secret: str, log_path: Path
) -> dict[str, Any]:
    return {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(data_dir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
        "log_config": str(data_dir / "log_config.yaml"),
        "media_store_path": str(data_dir / "media_store"),
        "signing_key_path": str(data_dir / f"{server_name}.signing.key"),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "report_stats": False,
        "enable_registration": False,
        "bcrypt_rounds": 4,
        "presence": {"enabled": False},
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "enable_metrics": False,
        "url_preview_enabled": False,
    }


def _log_config(log_path: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "filename": str(log_path),
                "encoding": "utf8",
            }
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


async def _wait_ready(server: SynapseServer, timeout: float) -> None:
    """Poll until /health and /_matrix/client/versions answer (the former can be first)."""
    deadline = time.monotonic() + timeout
    probe_timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=probe_timeout) as session:
        while True:
            code = server.process.poll()
            if code is not None:
                tail = server.log_tail()
                if "Address already in use" in tail:
                    raise _PortTaken()
                raise SynapseError(f"Synapse exited with status {code} while starting:\n{tail}")
            if await _answers(session, f"{server.base_url}/health") and await _answers(
                session, f"{server.base_url}/_matrix/client/versions"
            ):
                return
            if time.monotonic() > deadline:
                raise SynapseError(
                    f"Synapse did not answer within {timeout:.0f} s:\n{server.log_tail()}"
                )
            await asyncio.sleep(_POLL_INTERVAL)


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            await resp.read()
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


async def _json_or_raise(resp: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    if resp.status != 200:
        raise SynapseError(f"{what} failed: HTTP {resp.status} {await resp.text()}")
    data: dict[str, Any] = await resp.json()
    return data


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: nested mappings merge, anything else replaces."""
    result = dict(base)
    for key, value in extra.items():
        current = result.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            result[key] = _merged(current, value)
        else:
            result[key] = value
    return result


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read: the config holds the registration secret."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf8") as fh:
        fh.write(text)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf8", errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- {path.name} ---\n{tail}\n" if tail else ""


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session made the child a process-group leader: its pid is the group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have the kernel SIGTERM Synapse if our process dies without stopping it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig
