"""Periodic health checks and their state, with Distribution's semantics.

Each check runs in the background every ``interval`` (never per request), and its state
is read by ``/debug/health`` and the API gate. With a ``threshold`` of N, a check is
failing once N runs in a row failed (0 and 1: the first failure); one success clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("registry.health")


class CheckFailed(Exception):
    """A check's failure, its message fit for the health answer (no secret in it)."""


@dataclass
class PeriodicCheck:
    """One named check and the state of its last runs."""

    name: str
    run: Callable[[], Awaitable[None]]
    interval: float
    threshold: int = 0
    # Whether a failure makes the API answer 503 (Distribution's checks do; see endpoints).
    gates_api: bool = True
    timeout: float = 0.0  # 0: the interval, so that a hung check never piles up
    _error: str | None = field(default=None, init=False)
    _failures: int = field(default=0, init=False)

    @property
    def error(self) -> str | None:
        """The error to report, once the threshold is reached; None while passing."""
        return self._error if self._failures >= max(self.threshold, 1) else None

    def update(self, error: str | None) -> None:
        """Record one run's outcome (Distribution's thresholdUpdater)."""
        was = self.error
        if error is None:
            self._failures = 0
        elif self._failures < max(self.threshold, 1):
            self._failures += 1
        self._error = error
        now = self.error
        if now is not None and was is None:
            log.error("health check %s failing: %s", self.name, now)
        elif now is None and was is not None:
            log.info("health check %s passing again", self.name)

    async def run_once(self) -> None:
        """Run the check (bounded by its timeout) and record the outcome."""
        limit = self.timeout or self.interval
        try:
            async with asyncio.timeout(limit):
                await self.run()
        except CheckFailed as failure:
            self.update(str(failure))
        except TimeoutError:
            self.update(f"timed out after {limit:g}s")
        except Exception as error:  # any failure of the checked thing is a failed check
            self.update(f"{type(error).__name__}: {error}")
        else:
            self.update(None)

    async def poll(self) -> None:
        # The first run at once, unlike Distribution (after one interval): a registry that
        # starts without its storage must not pass for ready meanwhile.
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)


class HealthMonitor:
    """The checks of one registry process, polled in background tasks."""

    def __init__(self, checks: list[PeriodicCheck]) -> None:
        names = [check.name for check in checks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError("health checks configured twice: " + ", ".join(duplicates))
        self.checks = checks
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(check.poll()) for check in self.checks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def failures(self, *, gating_only: bool = False) -> dict[str, str]:
        """``{check name: error}`` of the failing checks (empty when all pass)."""
        return {
            check.name: error
            for check in self.checks
            if (error := check.error) is not None and (check.gates_api or not gating_only)
        }
