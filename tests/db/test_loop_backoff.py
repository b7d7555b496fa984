"""Background loops under a real Postgres outage: the server is stopped under the running loops
and started again. Each loop logs one warning for the outage and one line when it recovers, and
retries less and less often meanwhile (fail gently, without drowning the operator)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from bot.clock import Clock
from bot.db.database import EmbeddedPostgres, open_databases
from bot.db.pending_decryption import PendingDecryption
from bot.db.retention_rooms import RetentionRooms
from bot.db.tracked_events import TrackedEvents
from bot.service.background import Backoff
from bot.service.decryption import DecryptionRetrier
from bot.service.tracking import Backfiller

BACKOFF = Backoff(initial=0.2, cap=1.6)


def recording(
    step: Callable[[], Awaitable[None]], times: list[float]
) -> Callable[[], Awaitable[None]]:
    async def wrapped() -> None:
        times.append(time.monotonic())
        await step()

    return wrapped


def intervals(times: list[float], start: float, end: float) -> list[float]:
    during = [t for t in times if start <= t <= end]
    return [b - a for a, b in zip(during, during[1:], strict=False)]


async def test_loops_log_one_line_per_outage_and_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="chaperone")
    pg = EmbeddedPostgres(tmp_path / "data")
    url = await pg.astart()
    dbs = await open_databases(url, owner_url=pg.owner_url)
    none = cast(Any, None)  # neither loop reaches Matrix while nothing is pending or wanted
    parts: dict[str, Any] = {"gateway": none, "pipeline": none}
    if "withheld_notices" in inspect.signature(DecryptionRetrier).parameters:
        parts["withheld_notices"] = none  # older wiring; not reached either
    retrier = DecryptionRetrier(
        **parts,
        pending=PendingDecryption(dbs.main),
        clock=Clock(),
        poll_interval=0.05,
        backoff=BACKOFF,
    )
    backfiller = Backfiller(
        none,
        TrackedEvents(dbs.main),
        RetentionRooms(dbs.main),
        asyncio.Event(),
        poll_seconds=0.05,
        backoff=BACKOFF,
    )
    retries: list[float] = []
    backfills: list[float] = []
    monkeypatch.setattr(retrier, "retry_once", recording(retrier.retry_once, retries))
    monkeypatch.setattr(backfiller, "run_wanted", recording(backfiller.run_wanted, backfills))
    tasks = [asyncio.create_task(retrier.run()), asyncio.create_task(backfiller.run())]
    try:
        await asyncio.sleep(0.3)
        assert not retrier.outage.failing and not backfiller.outage.failing
        caplog.clear()

        await pg.astop()
        down = time.monotonic()
        await asyncio.sleep(6)
        up = time.monotonic()
        assert retrier.outage.failing and backfiller.outage.failing
        await pg.astart()
        deadline = time.monotonic() + 30
        while retrier.outage.failing or backfiller.outage.failing:
            assert time.monotonic() < deadline, "the loops did not recover"
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dbs.close()
        await pg.astop()

    ours = [r for r in caplog.records if r.name.startswith("chaperone")]
    for logger in ("chaperone.decryption", "chaperone.retention.tracking"):
        records = [r for r in ours if r.name == logger and r.levelno >= logging.INFO]
        warnings = [r for r in records if r.levelno >= logging.WARNING]
        recovered = [r for r in records if "recovered" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in records]
        assert "ref " in warnings[0].getMessage()
        assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
        assert len(records) == 2, [r.getMessage() for r in records]
    # Tracebacks only at DEBUG, where the reference leads to them.
    assert all(r.exc_info is None for r in ours if r.levelno >= logging.INFO)
    assert any(r.exc_info is not None for r in ours if r.levelno == logging.DEBUG)

    for times in (retries, backfills):
        gaps = intervals(times, down, up)
        assert len(gaps) >= 4, gaps  # it kept trying...
        assert len(gaps) <= 10, gaps  # ...but not every 50 ms: 6 s at a 1.6 s cap
        assert gaps[0] < 0.5 and max(gaps) > 1.2, gaps  # 0.2 s at first, growing to the cap
        assert all(b >= a - 0.15 for a, b in zip(gaps, gaps[1:], strict=False)), gaps
