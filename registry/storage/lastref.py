"""When each blob was last referenced (``lastref``): the time online garbage collection
compares with its grace period (docs/online-gc.md).

A blob's ``lastref`` is its upload time, moved forward by every manifest PUT that names
it, by a mount of it, and by a HEAD that tells a pushing client it exists. Where the
backend has real files (the filesystem driver), it is the modified time of the blob's
``data`` file, set with one ``utime`` call. Elsewhere (S3 cannot change an object's
LastModified) it is the later of ``data``'s and a ``lastref`` marker object's modified
times, the marker rewritten on each refresh. Either way the time comes from the storage's
own clock (the kernel's, or the S3 server's), which the collector reads the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Sequence

from registry.oci.digest import Digest
from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from registry.storage.driver.steps import Put, Step, Touch


class LastReferenced:
    """Reads and refreshes blobs' ``lastref`` on one driver."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        # Real files: the data file's own modified time is the record.
        self._local = driver.local_path(paths.ROOT) is not None

    async def refresh(self, digest: Digest) -> bool:
        """Set the blob's ``lastref`` to now; False when the blob is not there."""
        if self._local:
            return self._utime(paths.blob_data(digest))
        try:
            await self.driver.stat(paths.blob_data(digest))
        except PathNotFound:
            return False
        await self.driver.put_content(paths.blob_lastref(digest), b"")
        return True

    def before_adopt(self, digest: Digest, source: str) -> Step:
        """The step that makes the ``lastref`` of the blob ``source`` is about to become
        now, to run before the move that makes it visible (in the same go: on the
        filesystem, the ``utime`` in the move's thread job instead of on the event loop):
        a collector that sees the new blob sees it fresh."""
        if self._local:
            return Touch(source)
        return Put(paths.blob_lastref(digest), b"")

    async def read_many(self, digests: Sequence[Digest]) -> list[float | None]:
        """Each blob's ``lastref`` (seconds, storage clock): its data's modified time, or
        its marker's where that is later; None where the blob is not there. One bulk read
        of the driver's (a collection reads every unmarked blob's ``lastref``, twice)."""
        data = await self.driver.modified_many([paths.blob_data(d) for d in digests])
        if self._local:
            return data
        markers = await self.driver.modified_many([paths.blob_lastref(d) for d in digests])
        return [
            modified if modified is None or marker is None else max(modified, marker)
            for modified, marker in zip(data, markers, strict=True)
        ]

    async def forget_marker(self, digest: Digest) -> None:
        """Remove the marker of a blob that is gone (a refresh that raced its deletion
        leaves one). Safe even if the blob is being uploaded again: the upload's copy of
        ``data`` is itself fresh on such backends."""
        if not self._local:
            with contextlib.suppress(PathNotFound):
                await self.driver.delete(paths.blob_lastref(digest))

    async def now(self, run: str) -> float:
        """The storage clock's current time, read by writing a file of ``run``'s (and
        removing it): the collector compares ``lastref`` with this, never its own clock."""
        stamp = paths.gc_clock(run)
        await self.driver.put_content(stamp, b"")
        try:
            return (await self.driver.stat(stamp)).modified
        finally:
            with contextlib.suppress(PathNotFound):
                await self.driver.delete(stamp)

    def _utime(self, path: str) -> bool:
        local = self.driver.local_path(path)
        assert local is not None
        try:
            # One cached-metadata syscall, inline as the driver's own stat is.
            os.utime(local)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True


class RefreshMemo:
    """Which blobs this process refreshed recently, and when (monotonic), so that HEADs
    (thousands a second on a busy registry) refresh a blob at most once per
    ``interval``, and a push does not refresh again what this process itself made fresh
    moments before (``BlobGuard.made_fresh``). Bounded: the oldest entries go first."""

    def __init__(self, interval: float, capacity: int = 65536) -> None:
        self.interval = interval
        self.capacity = capacity
        # Keyed by the digest's hex: see "Keys by hex" in registry.oci.digest.
        self._at: OrderedDict[str, float] = OrderedDict()

    def due(self, digest: Digest) -> bool:
        return self.since(digest) is None

    def since(self, digest: Digest) -> float | None:
        """When the blob was refreshed, if within ``interval``; else None."""
        refreshed = self._at.get(digest.hex)
        if refreshed is None or time.monotonic() - refreshed >= self.interval:
            return None
        return refreshed

    def note(self, digest: Digest, at: float | None = None) -> None:
        """Refreshed at ``at`` (monotonic; now if None): a time no later than the
        refresh itself, since the guarantees count from it."""
        key = digest.hex
        self._at[key] = time.monotonic() if at is None else at
        self._at.move_to_end(key)
        while len(self._at) > self.capacity:
            self._at.popitem(last=False)

    def forget(self, digest: Digest) -> None:
        self._at.pop(digest.hex, None)
