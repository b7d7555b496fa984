"""Two database roles for one test database: an owner (migrations) and the bot's runtime role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from yarl import URL


@dataclass(frozen=True)
class SplitRoles:
    admin_url: str
    """A superuser on the test database (the test server's own URL)."""
    owner_url: str
    app_url: str
    owner: str
    app: str


def _as(url: str, user: str, password: str) -> str:
    return str(URL(url).with_user(user).with_password(password))


@asynccontextmanager
async def split_roles(db_url: str) -> AsyncIterator[SplitRoles]:
    """Create an owner role (owning the database) and a plain runtime role; drop both after."""
    suffix = uuid.uuid4().hex[:8]
    owner, app, password = f"chap_owner_{suffix}", f"chap_app_{suffix}", uuid.uuid4().hex
    database = URL(db_url).path.lstrip("/")
    admin = await asyncpg.connect(db_url)
    try:
        for role in (owner, app):
            statement = await admin.fetchval(
                "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                role,
                password,
            )
            await admin.execute(statement)
        statement = await admin.fetchval(
            "SELECT format('ALTER DATABASE %I OWNER TO %I', $1::text, $2::text)", database, owner
        )
        await admin.execute(statement)
    finally:
        await admin.close()
    try:
        yield SplitRoles(
            db_url, _as(db_url, owner, password), _as(db_url, app, password), owner, app
        )
    finally:
        admin = await asyncpg.connect(db_url)
        try:
            for role in (app, owner):
                statement = await admin.fetchval(
                    "SELECT format('DROP OWNED BY %I CASCADE', $1::text)", role
                )
                await admin.execute(statement)
            await admin.execute(
                await admin.fetchval(
                    "SELECT format('ALTER DATABASE %I OWNER TO current_user', $1::text)", database
                )
            )
            for role in (app, owner):
                await admin.execute(
                    await admin.fetchval("SELECT format('DROP ROLE %I', $1::text)", role)
                )
        finally:
            await admin.close()
