"""A stop always ends: a step that hangs is named in the log and skipped (CI once waited 300 s
on a teardown that never returned)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot import app


async def _deaf_to_cancellation(started: asyncio.Event) -> None:
    started.set()
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # the bug being guarded against


async def test_a_task_that_ignores_cancellation_is_named_and_left_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "STOP_STEP_SECONDS", 0.2)
    started = asyncio.Event()
    deaf = asyncio.create_task(_deaf_to_cancellation(started), name="deaf")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    await started.wait()

    await asyncio.wait_for(app._stop_tasks([deaf, polite]), 2)

    assert polite.cancelled()
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "task deaf ignored cancellation" in line
    assert "_deaf_to_cancellation" in line and "test_app_stop.py" in line
    deaf.get_coro().close()


async def test_a_hanging_or_failing_step_does_not_stop_the_next(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "STOP_STEP_SECONDS", 0.2)
    done: list[str] = []

    async def fails() -> None:
        raise ConnectionResetError("secret detail")

    async def finishes() -> None:
        done.append("closed")

    await app._within("the pools", asyncio.sleep(3600))
    await app._within("the client", fails())
    await app._within("the lock", finishes())

    assert done == ["closed"]
    lines = [r.getMessage() for r in caplog.records]
    assert "Stopping: the pools did not finish within 0.2 s; going on" in lines
    assert "Stopping: the client failed (ConnectionResetError); going on" in lines
    assert not any("secret detail" in line for line in lines)
