"""Keeping the homeserver's 429 `retry_after_ms`.

mautrix 0.21's HTTPAPI neither retries a 429 nor keeps `retry_after_ms` (it raises a bare
MLimitExceeded), so pacing to the homeserver's limit needs the value kept here. Everything else
behaves exactly as in mautrix: RateLimited *is* an MLimitExceeded.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import ClientResponse
from mautrix.api import HTTPAPI, Method
from mautrix.errors import MLimitExceeded, make_request_error
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


class PacedHTTPAPI(HTTPAPI):
    """HTTPAPI whose 429s raise RateLimited carrying the homeserver's wait."""

    async def _send(
        self,
        method: Method,
        url: URL,
        content: Any,
        query_params: dict[str, str],
        headers: dict[str, str],
    ) -> tuple[Any, ClientResponse]:
        request = self.session.request(
            str(method), url, data=content, params=query_params, headers=headers
        )
        async with request as response:
            if 200 <= response.status < 300:
                return await response.json(), response
            text = await response.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            fields = body if isinstance(body, dict) else {}
            if response.status == 429:
                raise RateLimited(
                    429,
                    str(fields.get("error", "")),
                    retry_after_ms(body, response.headers.get("Retry-After")),
                )
            # Every other error exactly as mautrix raises it.
            raise make_request_error(
                http_status=response.status,
                text=text,
                errcode=fields.get("errcode"),
                message=fields.get("error"),
                unstable_errcode=fields.get("org.matrix.msc3848.unstable.errcode"),
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
