"""Condemned records: the blobs a collection run is about to delete, in the storage every
registry instance shares (docs/online-gc.md).

One record per run, written once before the run re-reads its candidates and removed when
its deletions are done: one write however many blobs it holds (50,000 candidates are one
object of about 3.6 MB, not 50,000 tombstones). A PUT lists the records (one list call,
an empty directory nearly always) and reads each new one once per process: a record never
changes, so its digests are kept by name until it disappears from the listing.

A record's name starts with its writer's Unix time. A collector never deletes later than
``LEASE`` after writing its record (it checks its monotonic clock), and readers ignore a
record older than twice that (a crashed collector's), so clocks may differ by up to
``LEASE`` between instances.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid

from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver

log = logging.getLogger("registry.gc")

LEASE = 3600.0  # seconds a run may spend deleting after it condemned


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

    async def active(self) -> set[Digest]:
        """Every digest a live record names, read from storage now (linearizably: a
        record written before this call started is seen)."""
        try:
            names = await self.driver.list_dir(paths.GC_CONDEMNED)
        except PathNotFound:
            names = []
        cutoff = time.time() - 2 * LEASE
        live = [n for n in names if not n.startswith(".") and (_written_at(n) or 0) >= cutoff]
        for name in list(self._known):
            if name not in live:
                del self._known[name]
        condemned: set[Digest] = set()
        for name in live:
            if name not in self._known:
                content = await self._read(name)
                if content is None:
                    continue  # cleared meanwhile
                self._known[name] = content
            condemned |= self._known[name]
        return condemned

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

    async def clear_expired(self) -> None:
        """Remove the records of crashed runs (older than readers honour)."""
        try:
            names = await self.driver.list_dir(paths.GC_CONDEMNED)
        except PathNotFound:
            return
        cutoff = time.time() - 2 * LEASE
        for name in names:
            written = _written_at(name)
            if written is not None and written < cutoff:
                await self.clear(name)
