"""mautrix still works the way `bot/mautrix_compat/` and `bot/matrix/ratelimit.py` rely on.

A failure here after a mautrix (or aiohttp) upgrade means one of those relied-on behaviours
changed: read the assertion's message, fix the override (or drop it if mautrix now offers a
public hook), and only then widen the mautrix version range in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, cast

import pytest
from aiohttp import web
from mautrix.api import HTTPAPI, Method
from mautrix.client import Client
from mautrix.crypto import InboundGroupSession, OlmMachine
from mautrix.errors import MForbidden, MLimitExceeded
from mautrix.types import JSON, IdentityKey, RoomID, SigningKey, UserID
from mautrix.util.async_db import Connection, Database
from mautrix.util.async_db import database as mautrix_database
from olm.group_session import OutboundGroupSession

from bot.matrix.ratelimit import PacedHTTPAPI, RateLimited, paced_session
from bot.mautrix_compat.client import QuietClient
from bot.mautrix_compat.connection import current_connection

SECRET = "patient-said-something-private"

# A message whose content cannot be read (m.relates_to must be an object): mautrix's own warning
# would quote it, body included.
UNREADABLE = {
    "type": "m.room.message",
    "event_id": "$unreadable",
    "sender": "@patient:example.org",
    "origin_server_ts": 1,
    "content": {"msgtype": "m.text", "body": SECRET, "m.relates_to": "not an object"},
}

UPGRADE = "mautrix changed under bot/mautrix_compat/:"


# -- QuietClient: Client._try_deserialize -------------------------------------------------------


def test_try_deserialize_still_exists_with_the_overridden_signature() -> None:
    theirs = inspect.getattr_static(Client, "_try_deserialize", None)
    assert inspect.isfunction(theirs), (
        f"{UPGRADE} Client._try_deserialize is gone, so QuietClient overrides nothing and "
        "mautrix may log undecodable events' content again"
    )
    params = list(inspect.signature(theirs).parameters)
    assert params == ["self", "type", "data"], (
        f"{UPGRADE} Client._try_deserialize now takes {params}; QuietClient's override takes "
        "(self, type, data)"
    )
    assert list(inspect.signature(QuietClient._try_deserialize).parameters) == params


def _client(cls: type[Client]) -> Client:
    return cls(mxid=UserID("@bot:example.org"), base_url="http://127.0.0.1:9")


async def _handle_sync(client: Client, event: dict[str, Any]) -> None:
    sync = {"rooms": {"join": {"!room:example.org": {"timeline": {"events": [event]}}}}}
    try:
        tasks = client.handle_sync(cast(JSON, sync))
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await client.api.session.close()


async def test_handle_sync_reads_events_through_the_quiet_override(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await _handle_sync(_client(QuietClient), UNREADABLE)
    ours = [r for r in caplog.records if r.getMessage().startswith("Could not read")]
    assert [r.getMessage() for r in ours] == [
        "Could not read a m.room.message event $unreadable (Event)"
    ], (
        f"{UPGRADE} Client.handle_sync no longer reads timeline events through "
        "_try_deserialize, so QuietClient's override is not called"
    )
    leaked = [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]
    assert not leaked, f"an undecodable event's content reached the log: {leaked}"


async def test_mautrix_itself_still_quotes_undecodable_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Why QuietClient exists. If this fails, mautrix stopped quoting the event: QuietClient
    may no longer be needed (check what mautrix logs now before dropping it)."""
    caplog.set_level(logging.WARNING)
    await _handle_sync(_client(Client), UNREADABLE)
    assert any(SECRET in r.getMessage() for r in caplog.records), (
        f"{UPGRADE} mautrix's Client no longer logs an undecodable event's content; "
        "QuietClient may be unnecessary now"
    )


# -- current_connection: mautrix.util.async_db.database.conn_var --------------------------------


class _FakeDatabase(Database):
    """A Database whose pool hands out numbered stand-ins for connections."""

    def __init__(self) -> None:
        self.handed_out = 0

    @asynccontextmanager
    async def acquire_direct(self) -> AsyncIterator[Connection]:
        self.handed_out += 1
        yield cast(Connection, object())

    async def stop(self) -> None:
        pass


def test_conn_var_is_still_mautrixs_connection_context_variable() -> None:
    conn_var = getattr(mautrix_database, "conn_var", None)
    assert isinstance(conn_var, ContextVar), (
        f"{UPGRADE} mautrix.util.async_db.database.conn_var is gone or no longer a ContextVar; "
        "current_connection() (the audit log's reads joining a caller's transaction) needs "
        "another way to find the connection Database.acquire() holds"
    )
    assert conn_var.get() is None
    assert list(inspect.signature(Database.acquire).parameters) == ["self"]


async def test_acquire_keeps_its_connection_in_conn_var_and_joins_it() -> None:
    db = _FakeDatabase()
    outer: Connection
    inner: Connection
    assert current_connection() is None
    async with db.acquire() as outer:
        assert current_connection() is outer, (
            f"{UPGRADE} Database.acquire() no longer puts its connection in conn_var, so "
            "current_connection() cannot see a caller's transaction"
        )
        async with db.acquire() as inner:
            assert inner is outer, (
                f"{UPGRADE} Database.acquire() inside another no longer joins its connection "
                "(bot.db.database.transaction relies on that too)"
            )
        assert db.handed_out == 1
    assert current_connection() is None
    async with db.acquire_direct() as direct:
        assert current_connection() is None, (
            f"{UPGRADE} Database.acquire_direct() now sets conn_var; the audit reader uses it "
            "precisely because it does not"
        )
        assert direct is not None


# -- PacedHTTPAPI: an aiohttp middleware, relying on HTTPAPI.request's public behaviour ---------


@pytest.fixture
async def homeserver() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A stand-in homeserver: GET /<status> answers with that status (and a known body)."""
    seen: list[web.Request] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        status = int(request.match_info["status"])
        if status == 200:
            return web.json_response({"ok": True})
        if status == 429 and "plain" in request.query:
            return web.Response(status=429, text="<html>slow</html>", headers={"Retry-After": "2"})
        if status == 429:
            body = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many", "retry_after_ms": 1500}
            return web.json_response(body, status=429)
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=status)

    app = web.Application()
    app.router.add_get("/{status}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_429_reaches_the_caller_as_rate_limited_once(
    homeserver: tuple[str, list[web.Request]],
) -> None:
    url, seen = homeserver
    api = PacedHTTPAPI(base_url=url, default_retry_count=3)
    try:
        with pytest.raises(RateLimited) as e:
            await api.request(Method.GET, "429")
        assert e.value.retry_after_ms == 1500 and e.value.message == "Too many"
        assert isinstance(e.value, MLimitExceeded)
        assert len(seen) == 1, (
            "mautrix's HTTPAPI.request now retries a 429 itself: retry_rate_limited and the "
            "outbox's pacing would wait twice"
        )
        with pytest.raises(RateLimited) as e:
            await api.request(Method.GET, "429", query_params={"plain": "1"})
        assert e.value.retry_after_ms == 2000 and e.value.message == ""
        with pytest.raises(MForbidden) as forbidden:
            await api.request(Method.GET, "403")
        assert not isinstance(forbidden.value, RateLimited) and forbidden.value.message == "no"
        assert await api.request(Method.GET, "200") == {"ok": True}
        assert seen[-1].headers["User-Agent"] == HTTPAPI.default_ua
    finally:
        await api.session.close()


async def test_an_api_sharing_a_paced_session_is_paced_too(
    homeserver: tuple[str, list[web.Request]],
) -> None:
    url, _seen = homeserver
    session = paced_session()
    try:
        api = PacedHTTPAPI(base_url=url, token="admin", client_session=session)
        assert api.session is session
        with pytest.raises(RateLimited):
            await api.request(Method.GET, "429")
    finally:
        await session.close()


def test_the_megolm_bookkeeping_relied_on_is_still_there() -> None:
    params = list(inspect.signature(OlmMachine._ratchet_session).parameters)
    assert params == ["self", "sess", "index"], (
        f"{UPGRADE} OlmMachine._ratchet_session, which mautrix_compat/megolm.py calls after "
        f"each decryption (now {params})"
    )
    session = InboundGroupSession(
        session_key=OutboundGroupSession().session_key,
        signing_key=SigningKey("s"),
        sender_key=IdentityKey("k"),
        room_id=RoomID("!room:x"),
    )
    assert (session.sender_key, session.signing_key, session.forwarding_chain) == ("k", "s", []), (
        f"{UPGRADE} InboundGroupSession's sender_key/signing_key/forwarding_chain, which "
        "bot/matrix/megolm.py reads for the sender's trust"
    )
