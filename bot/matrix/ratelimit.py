"""Keeping the homeserver's 429 `retry_after_ms`.

mautrix 0.21's HTTPAPI neither retries a 429 nor keeps `retry_after_ms` (it raises a bare
MLimitExceeded), so pacing to the homeserver's limit needs the value kept here. It is kept
through public hooks only: an aiohttp client middleware on the session mautrix sends with
raises a 429 as RateLimited, which *is* an MLimitExceeded, and mautrix's `HTTPAPI.request`
passes it on as it would its own (a 429 is never retried). Every other response reaches mautrix
untouched, so every other error is exactly mautrix's.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientSession
from mautrix.api import HTTPAPI
from mautrix.errors import MLimitExceeded
from yarl import URL

T = TypeVar("T")


class RateLimited(MLimitExceeded):
    """A 429; `retry_after_ms` is what the homeserver asked us to wait (None if it did not say)."""

    def __init__(self, http_status: int, message: str, retry_after_ms: int | None) -> None:
        super().__init__(http_status, message)
        self.retry_after_ms = retry_after_ms


def retry_after_ms(body: Any, header: str | None) -> int | None:
    """From the JSON body (`retry_after_ms`) or, failing that, the Retry-After header (s)."""
    if isinstance(body, dict):
        value = body.get("retry_after_ms")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    if header:
        try:
            return max(0, math.ceil(float(header) * 1000))
        except ValueError:
            return None
    return None


async def raise_rate_limited(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """aiohttp client middleware: a 429 raises RateLimited with the homeserver's wait."""
    response = await handler(request)
    if response.status != 429:
        return response
    try:
        text = await response.text()
    finally:
        response.release()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    fields = body if isinstance(body, dict) else {}
    raise RateLimited(
        429,
        str(fields.get("error", "")),
        retry_after_ms(body, response.headers.get("Retry-After")),
    )


def paced_session() -> ClientSession:
    """The session HTTPAPI would make itself (same User-Agent), plus `raise_rate_limited`."""
    return ClientSession(
        headers={"User-Agent": HTTPAPI.default_ua}, middlewares=(raise_rate_limited,)
    )


class PacedHTTPAPI(HTTPAPI):
    """HTTPAPI whose 429s raise RateLimited carrying the homeserver's wait.

    Only the session differs: without `client_session` it gets a `paced_session()`. A session
    passed in paces only if it is one too (e.g. another PacedHTTPAPI's `session`).
    """

    def __init__(
        self,
        base_url: URL | str,
        token: str = "",
        *,
        client_session: ClientSession | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            base_url,
            token,
            client_session=client_session if client_session is not None else paced_session(),
            **kwargs,
        )


async def retry_rate_limited(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = 5,
    max_wait: float = 60.0,
    delay: Callable[[int | None, int], float] | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> T:
    """Run `call`, waiting out the homeserver's 429s between tries: the one retry loop for 429s.

    Waits `delay(retry_after_ms, attempt)` seconds (attempt 0 first), by default what the
    homeserver asked (1 s if it did not say), at most `max_wait`; `on_wait` hears each wait.
    After `attempts` tries the last RateLimited is raised; None tries until `call` succeeds."""
    attempt = 0
    while True:
        try:
            return await call()
        except RateLimited as e:
            if attempts is not None and attempt >= attempts - 1:
                raise
            if delay is not None:
                wait = delay(e.retry_after_ms, attempt)
            else:
                wait = min(max_wait, (e.retry_after_ms or 1000) / 1000)
            if on_wait is not None:
                on_wait(wait)
            await asyncio.sleep(wait)
            attempt += 1
