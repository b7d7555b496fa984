"""The shared background-loop helper: capped exponential backoff, one warning per outage, one
recovery line, tracebacks only at DEBUG, and no exception text in what operators read."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.service.background import Backoff, Outage, run_forever


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (100, 60.0), (10**6, 60.0)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert Backoff(initial=1.0, cap=60.0).delay(failures) == delay


async def test_run_forever_backs_off_logs_once_and_recovers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chaperone.test")
    log = logging.getLogger("chaperone.test")
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)  # the module background.py uses
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 8:  # a seven-attempt outage between two good runs
            raise ConnectionRefusedError("secret detail that must not be logged")

    outage = Outage(log, "The test loop", Backoff(initial=0.5, cap=4.0))
    task = asyncio.create_task(run_forever(step, interval=10.0, outage=outage))
    while calls < 10:
        await real_sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert slept[:9] == [10.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 10.0]
    # This loop's records only: asyncio.sleep is patched for the whole event loop, so other
    # tests' leftover tasks may log meanwhile.
    ours = [r for r in caplog.records if r.name == "chaperone.test"]
    shown = [r for r in ours if r.levelno >= logging.INFO]
    assert [r.levelno for r in shown] == [logging.WARNING, logging.INFO]
    assert "is failing (ConnectionRefusedError, ref " in shown[0].getMessage()
    assert "recovered after 7 failed attempt(s)" in shown[1].getMessage()
    assert all(r.exc_info is None for r in shown)
    assert all("secret detail" not in r.getMessage() for r in caplog.records)
    debug = [r for r in ours if r.levelno == logging.DEBUG]
    assert len(debug) == 7 and all(r.exc_info for r in debug)
    assert outage.reference is None and not outage.failing


async def test_a_second_outage_is_reported_again_with_a_new_reference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chaperone.test")
    outage = Outage(logging.getLogger("chaperone.test"), "The test loop")
    outage.failed(OSError())
    first = outage.reference
    outage.failed(OSError())
    assert outage.succeeded() and not outage.succeeded()
    outage.failed(TimeoutError())
    assert outage.reference not in (None, first)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2


async def test_wake_cuts_the_interval_short_but_not_a_backoff() -> None:
    wake = asyncio.Event()
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def step() -> None:
        calls.append(loop.time())
        if len(calls) == 2:
            raise OSError

    outage = Outage(logging.getLogger("chaperone.test"), "x", Backoff(initial=0.3, cap=0.3))
    task = asyncio.create_task(run_forever(step, interval=30.0, outage=outage, wake=wake))
    await asyncio.sleep(0.01)
    wake.set()  # step 2 (fails) at once, instead of after 30 s
    await asyncio.sleep(0.05)
    wake.set()  # ignored: the backoff runs out first
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) == 3
    assert calls[2] - calls[1] >= 0.29
