"""Condemned records: the blobs a collection run is about to delete, in the storage every
registry instance shares (docs/online-gc.md).

One record per run, written once before the run re-reads its candidates and removed when
its deletions are done: one write however many blobs it holds (50,000 candidates are one
object of about 3.6 MB, not 50,000 tombstones). A PUT lists the records (one list call,
an empty directory nearly always) and reads each new one once per process: a record never
changes, so its digests are kept by name until it disappears from the listing.

A record holds pushes back only while its run's lease is alive (``leases``): readers
ignore the record of a run whose lease stopped changing ``leases.EXPIRY`` seconds ago (a
killed collector's), and a later run removes such a record once it is ``ABANDONED``.
A record's name starts with its writer's Unix time, for that clean-up only.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable

from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from registry.storage.leases import ABANDONED, LeaseObserver, written_at

log = logging.getLogger("registry.gc")


def new_run() -> str:
    """A record name: the writer's time first (for expiry), then a unique part."""
    return f"{int(time.time())}-{uuid.uuid4().hex}"


def _written_at(run: str) -> float | None:
    try:
        return float(run.split("-", 1)[0])
    except ValueError:
        return None


class Condemnations:
    """Reads, writes and clears condemned records on one driver."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._known: dict[str, frozenset[Digest]] = {}
        self.leases = LeaseObserver(driver)

    async def holding(self, wanted: Iterable[Digest]) -> set[Digest]:
        """The digests among ``wanted`` that a live run's record names, read from
        storage now (linearizably: a record written before this call started is seen)."""
        wanted = set(wanted)
        try:
            names = await self.driver.list_dir(paths.GC_CONDEMNED)
        except PathNotFound:
            names = []
        runs = {n for n in names if not n.startswith(".")}
        for name in list(self._known):
            if name not in runs:
                del self._known[name]
        self.leases.keep_only(runs)
        held: set[Digest] = set()
        for name in sorted(runs):
            if name not in self._known:
                content = await self._read(name)
                if content is None:
                    continue  # cleared meanwhile
                self._known[name] = content
            named = self._known[name] & wanted
            # Only a record that names a wanted blob costs a read of its lease.
            if named and await self.leases.alive(name):
                held |= named
        return held

    async def _read(self, name: str) -> frozenset[Digest] | None:
        try:
            body = await self.driver.get_content(paths.gc_condemned(name))
        except PathNotFound:
            return None
        digests = set()
        for line in body.decode("ascii", "replace").splitlines():
            try:
                digests.add(parse_digest(line))
            except InvalidDigest:
                log.warning("condemned record %s: ignoring line %r", name, line[:100])
        return frozenset(digests)

    async def write(self, run: str, digests: list[Digest]) -> None:
        body = "".join(f"{digest}\n" for digest in sorted(digests, key=str))
        await self.driver.put_content(paths.gc_condemned(run), body.encode("ascii"))

    async def clear(self, run: str) -> None:
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(paths.gc_condemned(run))

    async def clear_abandoned(self) -> None:
        """Remove the records (and leases) of runs dead for ``ABANDONED`` seconds: a
        lease not renewed for that long, by its writer's clock (instances' clocks may
        differ by up to that much)."""
        try:
            names = await self.driver.list_dir(paths.GC_CONDEMNED)
        except PathNotFound:
            return
        cutoff = time.time() - ABANDONED
        for name in names:
            renewed = await written_at(self.driver, name)
            if renewed is None:
                renewed = _written_at(name)  # a record whose lease is gone: its own time
            if renewed is not None and renewed < cutoff:
                await self.clear(name)
                with contextlib.suppress(PathNotFound):
                    await self.driver.delete(paths.gc_lease(name))
        # Leases of runs killed after taking their lease but before writing the record.
        with contextlib.suppress(PathNotFound):
            for name in await self.driver.list_dir(paths.GC_LEASES):
                if name not in names and (_written_at(name) or cutoff) < cutoff:
                    with contextlib.suppress(PathNotFound):
                        await self.driver.delete(paths.gc_lease(name))
