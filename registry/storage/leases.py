"""Collection runs' leases: how long a condemned record holds pushes back
(docs/online-gc.md, "A collector's lease").

A run that writes a condemned record first writes its lease, a small object under
``_gc/leases/`` beside it, and rewrites it every ``RENEW`` seconds with a new count
until the record is cleared. A reader (a push waiting on the record) treats the run as
dead once it has seen the same lease content for ``EXPIRY`` seconds of its *own*
monotonic clock: no clock is compared between machines, so neither skew nor the
storage's timestamps enter. A run killed with SIGKILL thus stops holding pushes
``EXPIRY`` seconds after a reader first looks.

The run's side of the bargain: it deletes only while its latest acknowledged renewal
began less than ``HOLD`` seconds ago, and gives up for good if two renewals were ever
further apart than that (a reader may have seen one content for ``EXPIRY`` by then). A
reader can only declare a run dead ``EXPIRY`` seconds after the run began the renewal
it reads, so the run's deletions stop ``EXPIRY - HOLD`` seconds before that: the margin
one batch of deletions has to finish (gc.SWEEP_BATCH, and gc.IDLE_SWEEP_BATCH for a
collector at idle priority, are sized for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from registry.storage import paths
from registry.storage.driver.base import DriverError, PathNotFound, StorageDriver

log = logging.getLogger("registry.gc")

RENEW = 2.0  # seconds between two renewals of a run's lease
EXPIRY = 8.0  # seconds a reader waits on an unchanged lease before ignoring its record
HOLD = 6.0  # a run stops deleting this long after its last renewal began
ABANDONED = 3600.0  # wall-clock age after which a later run clears a dead run's record


class Lease:
    """One run's lease, renewed by a task of its own while the run holds a record."""

    def __init__(self, driver: StorageDriver, run: str) -> None:
        self.driver = driver
        self.run = run
        self._count = 0
        self._renewed: float | None = None  # monotonic start of the last acknowledged write
        self._lost = False
        self._task: asyncio.Task[None] | None = None

    async def take(self) -> None:
        """Write the lease (before the record it covers) and start renewing it."""
        await self._write()
        self._task = asyncio.create_task(self._renew_forever())

    def held(self) -> bool:
        """Whether the run may still delete: no reader can have given up on it yet."""
        if self._renewed is None or self._lost:
            return False
        return time.monotonic() - self._renewed < HOLD

    async def drop(self) -> None:
        """Stop renewing and remove the lease (after the record it covers)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(paths.gc_lease(self.run))

    async def _write(self) -> None:
        started = time.monotonic()
        self._count += 1
        body = f"{self._count} {int(time.time())}\n".encode("ascii")
        await self.driver.put_content(paths.gc_lease(self.run), body)
        late = self._renewed is not None and time.monotonic() - self._renewed >= HOLD
        if late and not self._lost:
            # Readers may have seen the previous content for EXPIRY already.
            self._lost = True
            log.warning("run %s renewed its lease too late; it deletes nothing more", self.run)
        self._renewed = started

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW)
            try:
                await self._write()
            except (OSError, DriverError) as error:
                log.warning("run %s could not renew its lease: %s", self.run, error)


class LeaseObserver:
    """A reader's view of other runs' leases: which runs still hold their records."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._seen: dict[str, tuple[bytes, float]] = {}  # run -> content, first seen at

    async def alive(self, run: str) -> bool:
        """False once the run's lease is gone or has not changed for EXPIRY seconds."""
        try:
            content = await self.driver.get_content(paths.gc_lease(run))
        except PathNotFound:
            self._seen.pop(run, None)
            return False  # cleared (a lease is written before its record, removed after)
        now = time.monotonic()
        seen = self._seen.get(run)
        if seen is None or seen[0] != content:
            self._seen[run] = (content, now)
            return True
        return now - seen[1] < EXPIRY

    def keep_only(self, runs: set[str]) -> None:
        """Forget runs whose records are gone (the memo stays as small as the listing)."""
        for run in list(self._seen):
            if run not in runs:
                del self._seen[run]


async def written_at(driver: StorageDriver, run: str) -> float | None:
    """The writer's wall time of the run's last renewal; None without a lease."""
    try:
        content = await driver.get_content(paths.gc_lease(run))
    except PathNotFound:
        return None
    try:
        return float(content.split()[1])
    except (IndexError, ValueError):
        return 0.0  # unreadable: as old as can be
