"""One active instance per database: a session-level Postgres advisory lock.

A second instance started against the same database waits here as a warm standby (migrations
done, nothing else) and takes over as soon as the active one's session ends — including when
that process is killed, since Postgres releases the lock with the dead connection.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger("chaperone.leader")

ACTIVE_INSTANCE_LOCK_ID = 0x43_68_61_70_00_00_00_03


class LostLeadership(RuntimeError):
    """Another instance holds the lock now: this one must stop."""


class LeaderLock:
    def __init__(self, url: str, poll_seconds: float = 1.0) -> None:
        self.url = url
        self.poll_seconds = poll_seconds
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        """Return once this instance is the active one (waits as a standby until then)."""
        conn = await asyncpg.connect(self.url)
        told = False
        try:
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", ACTIVE_INSTANCE_LOCK_ID
            ):
                if not told:
                    log.warning("Another instance is active on this database; standing by")
                    told = True
                await asyncio.sleep(self.poll_seconds)
        except BaseException:
            await conn.close()
            raise
        if told:
            log.warning("The other instance is gone; taking over")
        self._conn = conn

    async def keep(self, interval: float = 5.0) -> None:
        """Hold the lock while running; raise LostLeadership if it cannot be kept.

        A Postgres restart drops the lock with its session. Then it is taken again at once if
        no one else has it (the usual case); if a standby got it first, this instance must stop.
        """
        lost = False  # told once per loss, not at every retry while Postgres is down
        while True:
            await asyncio.sleep(interval)
            if await self._still_held():
                continue
            if not lost:
                log.warning("Lost the database lock's session; taking the lock again")
                lost = True
            try:
                conn = await asyncpg.connect(self.url)
            except (OSError, asyncpg.PostgresError):
                continue  # Postgres still down: nobody else can take it either; retry
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", ACTIVE_INSTANCE_LOCK_ID):
                self._conn = conn
                lost = False
                log.info("Database lock taken again")
                continue
            await conn.close()
            raise LostLeadership("another instance became active while the lock was lost")

    async def _still_held(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            self._conn.terminate()
            return False
        return True

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def release(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # closing the session releases the lock
            self._conn = None
