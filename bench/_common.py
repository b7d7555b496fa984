"""Shared by the benchmark scripts (run as `python bench/<name>.py`)."""

from __future__ import annotations

import asyncpg
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
