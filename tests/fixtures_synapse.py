"""Fixtures for end-to-end tests: a real Synapse and real E2EE users (a pytest plugin).

- ``synapse``: one server for the whole session, rate limits off.
- ``synapse_rate_limited``: a second server with Synapse's default rate limits, started only
  if a test asks for it.
- ``make_user(prefix, admin=False) -> (user_id, password)``: a fresh user on ``synapse``.
- ``e2ee_user(prefix, ...) -> E2EEClient``: a fresh user, logged in with E2EE; closed at test end.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from bot.devtools.e2ee_client import E2EEClient
from bot.devtools.synapse import SynapseServer, start_synapse


class MakeUser(Protocol):
    async def __call__(
        self, localpart_prefix: str = "user", admin: bool = False
    ) -> tuple[str, str]: ...


class MakeE2EEUser(Protocol):
    async def __call__(
        self,
        localpart_prefix: str = "user",
        *,
        admin: bool = False,
        server: SynapseServer | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> E2EEClient: ...


async def register_unique_user(
    server: SynapseServer, localpart_prefix: str = "user", admin: bool = False
) -> tuple[str, str]:
    """Register ``<prefix>-<random>`` on ``server``; return ``(user_id, password)``."""
    prefix = re.sub(r"[^a-z0-9._=-]", "", localpart_prefix.lower()) or "user"
    localpart = f"{prefix}-{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    user_id = await server.register(localpart, password, admin=admin)
    return user_id, password


@pytest.fixture(scope="session")
async def synapse(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SynapseServer]:
    server = await start_synapse(tmp_path_factory.mktemp("synapse"), rate_limits=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def synapse_rate_limited(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[SynapseServer]:
    server = await start_synapse(tmp_path_factory.mktemp("synapse-rl"), rate_limits=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_user(synapse: SynapseServer) -> MakeUser:
    async def make(localpart_prefix: str = "user", admin: bool = False) -> tuple[str, str]:
        return await register_unique_user(synapse, localpart_prefix, admin)

    return make


@pytest.fixture
async def e2ee_user(synapse: SynapseServer) -> AsyncIterator[MakeE2EEUser]:
    clients: list[E2EEClient] = []

    async def login(
        localpart_prefix: str = "user",
        *,
        admin: bool = False,
        server: SynapseServer | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> E2EEClient:
        target = server or synapse
        user_id, password = credentials or await register_unique_user(
            target, localpart_prefix, admin
        )
        client = await E2EEClient.login(target.base_url, user_id, password)
        clients.append(client)
        return client

    yield login
    for client in reversed(clients):
        await client.close()
