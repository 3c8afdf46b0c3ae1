"""Online garbage collection's safety protocol: which unmarked blobs a collector may
delete, and the checks a push makes so that no acknowledged manifest names a missing
blob (docs/online-gc.md holds the argument).

Both sides write their own mark, then read the other's:
- a push (manifest PUT, upload, mount) refreshes each blob's ``lastref``, then reads
  the condemned records (waiting out any that names its blobs), then checks in storage,
  never in the cache, that each blob and link is there;
- a collector condemns its candidates (unmarked, ``lastref`` older than the grace
  period), then re-reads each candidate's ``lastref``, sparing any that moved, then
  deletes the rest and their layer links, then clears its record.

With a grace period of 0 none of this runs: that is Distribution's offline collection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from registry.oci.digest import Digest
from registry.storage import paths
from registry.storage.condemned import Condemnations, new_run
from registry.storage.driver.base import (
    DriverError,
    PathNotFound,
    StorageDriver,
    StorageUnavailable,
)
from registry.storage.lastref import LastReferenced, RefreshMemo
from registry.storage.leases import Lease

log = logging.getLogger("registry.gc")

# S3's LastModified has whole seconds: a candidate must be older than the grace period by
# this much more, so that truncation can never make a fresh blob look old.
CLOCK_RESOLUTION = 1.0
WAIT_STEP = 0.1  # seconds between two reads of the records while one names a blob
WAIT_LIMIT = 60.0  # a push never waits longer than this for a collector to finish
CONCURRENCY = 16
YIELD_EVERY = 64  # reads between two turns given to the rest of the event loop
T = TypeVar("T")


class CollectionBusy(StorageUnavailable):
    """A collector holds a blob this request needs for longer than the request may
    wait, or the request took too long: a 503 the client retries."""


class BlobGuard:
    """The push side of the protocol, one per store (``grace``: seconds)."""

    def __init__(self, driver: StorageDriver, grace: float) -> None:
        self.grace = grace
        self.lastref = LastReferenced(driver)
        self.condemned = Condemnations(driver)
        self.driver = driver
        # A HEAD refreshes a blob at most every quarter of the grace period: its lastref
        # is then never older than that, far from the grace a collector requires.
        self.memo = RefreshMemo(grace / 4) if grace > 0 else None
        # What this process made fresh itself within the last eighth of the grace period
        # (a blob it just moved in, a manifest it just wrote, a blob it just secured): a
        # push's first round counts those refreshes instead of repeating them, a utime
        # on the event loop each (issue 17). Its bound then counts from the earliest of
        # them, so it keeps at least 3/8 of the grace period (docs/online-gc.md).
        self.fresh = RefreshMemo(grace / 8) if grace > 0 else None

    @property
    def bound(self) -> float | None:
        """How long a push may take from its refreshes to its last write (seconds)."""
        return self.grace / 2 if self.grace > 0 else None

    def in_time(self, refreshed_at: float) -> bool:
        """Whether a push that last refreshed at ``refreshed_at`` may still write."""
        bound = self.bound
        return bound is None or time.monotonic() - refreshed_at <= bound

    async def noticed(self, digest: Digest) -> bool:
        """A client was told the blob exists (HEAD): refresh it, at most once per
        ``grace/4`` in this process; False when the blob is in fact gone."""
        if self.memo is None or not self.memo.due(digest):
            return True
        try:
            here = await self.lastref.refresh(digest)
        except (OSError, DriverError) as error:
            # The answer stays yes: only the protection is lost, and the PUT re-checks.
            log.warning("could not refresh blob %s: %s", digest, error)
            return True
        if not here:
            self.memo.forget(digest)
            return False
        self.memo.note(digest)
        return True

    def made_fresh(self, digests: Iterable[Digest], at: float) -> None:
        """This process refreshed (or wrote) these blobs, beginning at ``at`` (monotonic)."""
        if self.fresh is not None:
            for digest in digests:
                self.fresh.note(digest, at)

    async def secure(self, digests: Iterable[Digest]) -> Secured:
        """Refresh each blob, then read the condemned records; while one names a blob,
        wait and do both again (each refresh may still save the blob from the collector,
        and only the last one counts for the bound). Then find each in storage.

        The first round does not refresh again a blob this process made fresh within
        ``grace/8`` (``made_fresh``): that refresh counts instead, and ``refreshed_at``
        is then the earliest such. Rounds after a wait refresh every blob.

        No collector deletes a blob found here within the grace period after
        ``refreshed_at`` (docs/online-gc.md). Raises CollectionBusy when records keep
        naming a blob for longer than WAIT_LIMIT."""
        wanted = list(dict.fromkeys(digests))
        given_up = time.monotonic() + WAIT_LIMIT
        refreshed_at, stale = self._recent(wanted)
        while True:
            refreshed = await _bounded(self.lastref.refresh, stale) if stale else []
            if not await self.condemned.holding(wanted):
                break
            if time.monotonic() >= given_up:
                raise CollectionBusy("garbage collection is deleting a blob this push names")
            await asyncio.sleep(WAIT_STEP)
            refreshed_at, stale = time.monotonic(), wanted
        if self.memo is not None:
            for digest in wanted:
                self.memo.forget(digest)  # the next HEAD refreshes again
        present = await _bounded(self.exists, wanted)
        missing = {d for d, here in zip(wanted, present, strict=True) if not here}
        # Only what this round's refreshes found: a blob that appeared since carries
        # the refresh of whoever moved it in, not this one.
        self.made_fresh(
            (d for d, ok in zip(stale, refreshed, strict=True) if ok and d not in missing),
            refreshed_at,
        )
        return Secured(missing, refreshed_at)

    def _recent(self, wanted: list[Digest]) -> tuple[float, list[Digest]]:
        """The time a first round counts its refreshes from, and the blobs it must
        refresh: those this process did not make fresh within ``grace/8``."""
        now = time.monotonic()
        if self.fresh is None:
            return now, wanted
        stale: list[Digest] = []
        earliest = now
        for digest in wanted:
            since = self.fresh.since(digest)
            if since is None:
                stale.append(digest)
            else:
                earliest = min(earliest, since)
        return earliest, stale

    async def exists(self, digest: Digest) -> bool:
        """In storage, never the blob-descriptor cache (it may remember a deleted blob)."""
        try:
            await self.driver.stat(paths.blob_data(digest))
        except PathNotFound:
            return False
        return True


@dataclass(frozen=True)
class Secured:
    """What ``BlobGuard.secure`` found: the blobs missing, and when (monotonic) the
    others were last refreshed."""

    missing: set[Digest]
    refreshed_at: float


@dataclass
class Doom:
    """A collector's decision: blobs to delete and digests whose layer links go."""

    blobs: list[Digest] = field(default_factory=list)
    unlink: set[Digest] = field(default_factory=set)
    spared: int = 0  # unmarked blobs kept: referenced within the grace period
    # Untagged manifests whose lastref moved after the first read: kept after all.
    spared_manifests: set[Digest] = field(default_factory=set)


class CollectionSafety:
    """The collector side of the protocol, for one run (``grace``: seconds)."""

    def __init__(self, driver: StorageDriver, grace: float, *, dry_run: bool) -> None:
        self.grace = grace
        self.dry_run = dry_run
        self.lastref = LastReferenced(driver)
        self.condemned = Condemnations(driver)
        self.run = new_run()
        self.started = 0.0  # T0 on the storage clock
        self.lease = Lease(driver, self.run)
        self._condemned_at: float | None = None  # monotonic, once the record is written
        self._released = False  # the record cleared: every later deletion is refused

    @property
    def online(self) -> bool:
        return self.grace > 0

    async def start(self) -> None:
        """Take T0, before anything is read: what is referenced after it is not lost."""
        if self.online:
            self.started = time.time() if self.dry_run else await self.lastref.now(self.run)

    @property
    def threshold(self) -> float:
        """A ``lastref`` before this (storage clock) is older than the grace period."""
        return self.started - self.grace - CLOCK_RESOLUTION

    def is_old(self, lastref: float | None) -> bool:
        """Whether an untagged manifest whose content was last referenced at ``lastref``
        (None: its content is gone) may be deleted: always offline."""
        return not self.online or lastref is None or lastref < self.threshold

    async def first_reads(self, manifests: Iterable[Digest]) -> dict[Digest, float | None]:
        """Online, the ``lastref`` of untagged manifests' content (refreshed by every PUT
        and HEAD of the manifest and every PUT of an index or a referrer naming it)."""
        if not self.online:
            return {}
        wanted = sorted(set(manifests), key=str)
        return dict(zip(wanted, await self.lastref.read_many(wanted), strict=True))

    async def condemn(
        self,
        unmarked: list[Digest],
        linked: set[Digest],
        manifests: dict[Digest, float | None] | None = None,
    ) -> Doom:
        """Choose what goes among ``unmarked`` blobs and the unmarked digests of layer
        links (``linked``), and which untagged ``manifests`` (digests and their first
        reads) are spared after all; unless a dry run, write the record pushes honour."""
        manifests = manifests or {}
        if not self.online:
            return Doom(list(unmarked), set(unmarked) | linked)
        threshold = self.threshold
        first = await self.lastref.read_many(unmarked)
        reads = dict(zip(unmarked, first, strict=True))
        old = {d: t for d, t in reads.items() if t is not None and t < threshold}
        # Links whose blob is absent (never there, or deleted meanwhile) are garbage too.
        absent = {d for d, t in reads.items() if t is None} | (linked - reads.keys())
        spared = len(reads) - len(old) - sum(1 for t in reads.values() if t is None)
        if self.dry_run:
            return Doom([d for d in unmarked if d in old], set(old) | absent, spared)
        if not old and not absent and not manifests:
            return Doom(spared=spared)
        await self.condemned.clear_abandoned()
        await self.lease.take()  # before the record: a reader finds the record's lease
        self._condemned_at = time.monotonic()  # release() now clears both
        # Untagged manifests' digests too: a push that tags one, or names it in an index
        # or as a subject, waits for the run (or is seen by the re-read below).
        await self.condemned.write(self.run, list({*old, *absent, *manifests}))
        log.debug("run %s condemned %d old and %d absent blobs", self.run, len(old), len(absent))
        # Re-read after the record is visible: a push that refreshed before reading the
        # record is seen here; one that refreshes later sees the record and waits.
        again = await self.lastref.read_many(list(old))
        confirmed = {d for d, t in zip(old, again, strict=True) if t == old[d]}
        missing = list(absent)
        now_here = await self.lastref.read_many(missing)
        gone = {d for d, t in zip(missing, now_here, strict=True) if t is None}
        spared += len(old) - len(confirmed)
        await _bounded(self.lastref.forget_marker, gone)
        listed = list(manifests)
        now_read = await self.lastref.read_many(listed)
        moved = {d for d, t in zip(listed, now_read, strict=True) if t != manifests[d]}
        # A blob missing at the first read is never deleted (an upload may just have
        # put it there); only its links go, and only if it is still missing now.
        return Doom([d for d in unmarked if d in confirmed], confirmed | gone, spared, moved)

    def check_lease(self) -> None:
        """Called before each batch of deletions: once its lease may look expired to a
        reader, a run's record no longer holds pushes back, so it deletes nothing more."""
        if self._released:
            raise CollectionBusy("garbage collection cleared its record; nothing more deleted")
        if self._condemned_at is not None and not self.lease.held():
            raise CollectionBusy("garbage collection lost its lease; nothing more deleted")

    async def release(self) -> None:
        """Clear the record, once every deletion it covers is done."""
        if self._condemned_at is not None:
            await self.condemned.clear(self.run)
            await self.lease.drop()
            log.debug(
                "run %s cleared its record after %.3fs",
                self.run,
                time.monotonic() - self._condemned_at,
            )
            self._condemned_at = None
            self._released = True


async def _bounded(work: Callable[[Digest], Awaitable[T]], digests: Collection[Digest]) -> list[T]:
    """``work`` on each of ``digests``, at most CONCURRENCY at once, each started only
    when a worker is free; the results in the digests' order. As many workers as there
    are digests, up to CONCURRENCY: a push's commit checks one digest, and starting 16
    tasks for it took about 6% of a push's time on the event loop."""
    if len(digests) == 1:
        return [await work(next(iter(digests)))]
    results: dict[int, T] = {}
    queue = enumerate(digests)

    async def worker() -> None:
        for index, digest in queue:
            results[index] = await work(digest)
            if index % YIELD_EVERY == 0:
                # A local stat never suspends: without this, 50,000 reads would hold
                # the loop, and the run's lease renewal (and a serving registry's
                # requests, for a push's refreshes) would wait for all of them.
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(min(CONCURRENCY, len(digests)))))
    return [results[index] for index in range(len(results))]
