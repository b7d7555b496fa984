"""Telling a passing outage from an event that will fail however often it is tried."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import asyncpg
from mautrix.errors import MatrixConnectionError, MatrixRequestError

from bot.matrix.ratelimit import RateLimited

# SQLSTATE classes that say nothing about the data: connection trouble (08), out of
# resources (53), operator intervention such as a restart (57), a retryable conflict (40).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def is_transient(error: BaseException) -> bool:
    """True when trying the same thing again later may work: Postgres or the homeserver
    unreachable, restarting, overloaded or rate-limiting. Anything else — Postgres refusing
    a value, a malformed event, a bug — is the event's own and would fail every time."""
    if isinstance(
        error,
        OSError
        | TimeoutError
        | asyncio.TimeoutError
        | aiohttp.ClientError
        | MatrixConnectionError
        | RateLimited
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError,
    ):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(error, MatrixRequestError):
        return error.http_status >= 500 or error.http_status == 429
    return False


def error_reference() -> str:
    """A short reference number tying a user-facing error to a log line (never to content)."""
    return secrets.token_hex(4).upper()
