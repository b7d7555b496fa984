"""The active-instance lock survives a dropped session, unless a standby took over meanwhile."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.db.leader import LeaderLock, LostLeadership


async def drop_lock_sessions(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()


async def test_lock_is_taken_again_after_its_session_drops(db_url: str) -> None:
    active = LeaderLock(db_url)
    await active.acquire()
    keeper = asyncio.create_task(active.keep(interval=0.05))
    try:
        await drop_lock_sessions(db_url)
        await asyncio.sleep(0.5)
        assert not keeper.done() and active.held
        standby = LeaderLock(db_url, poll_seconds=0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(standby.acquire(), 0.3)  # still held by the active one
    finally:
        keeper.cancel()
        await active.release()


async def test_instance_stops_when_a_standby_took_over(db_url: str) -> None:
    active = LeaderLock(db_url)
    await active.acquire()
    standby = LeaderLock(db_url, poll_seconds=0.01)
    waiting = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.1)
    await drop_lock_sessions(db_url)  # the active one's session dies; the standby gets in
    await asyncio.wait_for(waiting, 5)
    with pytest.raises(LostLeadership):
        await asyncio.wait_for(active.keep(interval=0.05), 5)
    await standby.release()
    await active.release()
