"""Background loops that survive outages without drowning the operator.

Every periodic task of the bot (the decryption retrier, back-fill, the retention sweeper,
consent renewal, ...) runs through `run_forever`: on failure it backs off exponentially (capped)
and an `Outage` logs one warning when a loop starts failing and one info line when it recovers,
with a reference to find the traceback (at DEBUG). While Postgres is down for 20 s a loop logs
two lines, not one traceback per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.service.failures import error_reference


@dataclass(frozen=True)
class Backoff:
    """Delays after consecutive failures: `initial`, doubling, never above `cap` seconds."""

    initial: float = 1.0
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1 = the first)."""
        if failures <= 0:
            return 0.0
        return float(min(self.cap, self.initial * 2 ** min(failures - 1, 32)))


class Outage:
    """Tracks whether one loop is failing: one warning when it starts, one info line when it
    ends; every failure's traceback only at DEBUG. Exception messages never reach the warning
    (they may quote values); the type name and a reference do."""

    def __init__(self, log: logging.Logger, what: str, backoff: Backoff | None = None) -> None:
        self.log = log
        self.what = what
        self.backoff = backoff or Backoff()
        self.failures = 0
        self.reference: str | None = None
        self.since: float | None = None
        self.last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Note a failure; returns how long to wait before the next attempt."""
        self.failures += 1
        self.last_error = type(exc).__name__
        if self.failures == 1:
            self.reference = error_reference()
            self.since = time.monotonic()
            self.log.warning(
                "%s is failing (%s, ref %s); retrying with backoff, quietly until it recovers",
                self.what,
                self.last_error,
                self.reference,
            )
        self.log.debug(
            "%s failed (attempt %d, ref %s)",
            self.what,
            self.failures,
            self.reference,
            exc_info=exc,
        )
        return self.backoff.delay(self.failures)

    def succeeded(self) -> bool:
        """Note a success; True when it ended an outage (the recovery line was logged)."""
        if not self.failures:
            return False
        seconds = time.monotonic() - (self.since or time.monotonic())
        self.log.info(
            "%s recovered after %d failed attempt(s) in %.1f s (ref %s)",
            self.what,
            self.failures,
            seconds,
            self.reference,
        )
        self.failures, self.reference, self.since, self.last_error = 0, None, None, None
        return True


async def run_forever(
    step: Callable[[], Awaitable[object]],
    *,
    interval: float,
    outage: Outage,
    wake: asyncio.Event | None = None,
) -> None:
    """Run `step` every `interval` seconds (sooner when `wake` is set) until cancelled; after a
    failure wait by the outage's backoff instead, and ignore `wake` until it succeeds again."""
    while True:
        if wake is not None:
            wake.clear()  # before the step: a wake-up during it is not lost
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await asyncio.sleep(outage.failed(e))
            continue
        outage.succeeded()
        if wake is None:
            await asyncio.sleep(interval)
            continue
        try:
            await asyncio.wait_for(wake.wait(), interval)
        except TimeoutError:
            pass
