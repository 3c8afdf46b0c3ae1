"""The storage-driver interface every backend implements.

A driver knows paths and bytes, never digests or manifests. Paths are ``/``-separated,
absolute within the driver (``/docker/registry/v2/...``) and built only by
``registry.storage.paths`` from validated names and digests.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.storage.driver.steps import Delete, Move, Put, Step

# Requests one bulk read (``modified_many``) has in flight at once, by default.
MANY_AT_ONCE = 16


class DriverError(Exception):
    """A failure of the backend, in the driver's terms; mapped to the client's error
    once, at the store's edge (``registry.storage_errors``)."""


class PathNotFound(DriverError, FileNotFoundError):
    """The path does not exist in the driver."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class StorageUnavailable(DriverError):
    """The backend kept failing: the request changed nothing visible and may be retried."""

    def __init__(self, message: str = "the storage backend is unavailable") -> None:
        super().__init__(message)


class ContentChanged(DriverError):
    """A move conditional on its source's content (``move(..., expected=...)``) found the
    source holding other content: another writer appended to it or replaced it after the
    caller looked. Nothing was moved: the destination is as it was."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} changed before it could be moved")
        self.path = path


class SizeInvalid(DriverError):
    """The content is larger than the backend can store (e.g. S3's 10,000 parts)."""


class StorageFull(DriverError):
    """The backend has no space left for a write (ENOSPC, or EDQUOT: a quota)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no space left in storage for {path}")
        self.path = path


class StorageUnwritable(DriverError):
    """The storage takes no writes at all: a read-only root, or one that cannot be made."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"cannot write to {location}: {reason}")
        self.location = location


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    modified: float
    is_dir: bool
    # Names the exact content of a file (see ``FileWriter.version``); None if unknown.
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Content:
    """Exact content of a file, as a ``stat`` or a writer reported it: a size and a
    version (``FileWriter.base_version`` says what a version names)."""

    size: int
    version: str


class FileWriter(abc.ABC):
    """Appends to one file. Nothing is visible at the final path of a blob until the
    storage layer moves it there, so a writer only ever writes to upload areas."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes in the file, including what was there before an append."""

    @property
    def base_version(self) -> str | None:
        """The version of the content this writer appends to (its first ``size`` bytes at
        opening), or None when the driver cannot vouch for it (then nothing computed over
        an earlier version may be carried over to the new one).

        A version (a short printable string) names exact content: two files or stats with
        the same version and size hold the same bytes. Backends that may replace a file
        while another writer appends to it (S3: the last complete write wins) give each
        write a version of its own;
        backends whose appends never change bytes already written (filesystem, in-memory:
        concurrent appends both land, so the size moves on) may name all sizes alike."""
        return None

    @property
    def version(self) -> str | None:
        """After ``close``, the version the writer left (``base_version`` if it wrote
        nothing); None if unknown. ``stat`` reports the same while nothing replaces it."""
        return None

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    async def write_pieces(
        self, pieces: Sequence[bytes], then: Callable[[], None] | None = None
    ) -> None:
        """Write ``pieces`` one after the other, as received, and run ``then`` (hashing
        them) in a thread. Backends that can write them in one call without joining them
        first (the filesystem's ``writev``) override it, and run ``then`` in the thread
        that wrote, right after: one hand-over to a thread instead of two. Here it runs
        in the default executor while the pieces are written."""
        loop = asyncio.get_running_loop()
        job = None if then is None else loop.run_in_executor(None, then)
        try:
            for piece in pieces:
                await self.write(piece)
        finally:
            if job is not None:
                await job  # never left running behind the caller's back

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the file; the content stays for a later append."""


class StorageDriver(abc.ABC):
    name: str

    @abc.abstractmethod
    async def get_content(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        """Replace the file atomically: readers see the old or the new content.

        ``durable=False``: for a file no answer acknowledges as stored (an upload's start
        time), which need not survive a power loss; backends that flush skip it."""

    async def put_new(self, path: str, content: bytes) -> None:
        """Write a file no reader can know of yet (in a directory of a new random name:
        an upload's start time, before its id is answered) and no answer acknowledges
        as stored: nothing to flush, nothing to replace atomically. Backends that write
        files in place override it; this plain version is ``put_content(durable=False)``."""
        await self.put_content(path, content, durable=False)

    @abc.abstractmethod
    def reader(self, path: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        """Stream the file from ``offset``; raise PathNotFound when it is missing."""

    @abc.abstractmethod
    async def writer(
        self, path: str, append: bool = False, *, existing: bool = False
    ) -> FileWriter:
        """A writer of ``path``: emptied and created if missing, or (``append``) at its
        end. ``existing`` (with ``append``): only a file that is there, else PathNotFound;
        its writer's ``size`` and ``base_version`` are then its status, read once (an
        upload's PATCH read them by a ``stat`` first, issue 17)."""

    @abc.abstractmethod
    async def stat(self, path: str) -> FileInfo: ...

    @abc.abstractmethod
    async def list_dir(self, path: str) -> list[str]:
        """The names of the direct children of a directory (not full paths)."""

    async def listing_stamp(self, path: str) -> Hashable | None:
        """A value that differs once an entry was added to or removed from the directory
        ``path`` since it was read, by this process or any other sharing the storage; or
        None where the backend has no such value, or cannot vouch for it yet (a listing
        must then be read afresh). Read in one cheap call; a backend that has stamps raises
        PathNotFound for no directory. The default has none: S3 has no directories, so
        nothing its writers change."""
        return None

    @abc.abstractmethod
    async def move(self, source: str, destination: str, *, expected: Content | None = None) -> None:
        """Move atomically, replacing ``destination``.

        ``expected``: move only that content of ``source``, which a writer of another
        process may be appending to meanwhile; raise ContentChanged when it holds other
        content (what the caller computed over it, a digest, would not be the
        destination's)."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Delete a file or a whole directory tree."""

    async def run_steps(self, steps: Sequence[Step]) -> None:
        """Perform ``steps`` in order, each as its own method would, stopping at the
        first that fails (its error raised, the later ones not done); a ``Delete`` of
        nothing is no failure. Backends that can do them in one go override it (the
        filesystem: one thread job instead of one each); this plain version makes one
        call of the driver's methods per step (on S3 each is a request anyway)."""
        for step in steps:
            if isinstance(step, Move):
                await self.move(step.source, step.destination, expected=step.expected)
            elif isinstance(step, Put):
                await self.put_content(step.path, step.content)
            elif isinstance(step, Delete):
                with contextlib.suppress(PathNotFound):
                    await self.delete(step.path)
            else:  # a Touch: only backends with files of their own, which override this
                raise NotImplementedError(f"{type(self).__name__} cannot touch {step.path}")

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        """Delete each of ``paths`` (files or trees), for bulk work such as garbage
        collection: the bytes of the files removed at each path, or None when nothing
        was there. ``sole_file``: each path is most likely a directory holding only that
        file (a blob's ``data``, a link's ``link``), a hint a backend may use to skip a
        listing; whatever else a path holds is deleted all the same. Backends override
        it to batch the work (and to size it on the way); this plain version sizes each
        path with ``stat`` first (0 for a directory)."""
        deleted: list[int | None] = []
        for path in paths:
            try:
                info = await self.stat(path)
                await self.delete(path)
            except PathNotFound:
                deleted.append(None)
            else:
                deleted.append(0 if info.is_dir else info.size)
        return deleted

    async def modified_many(self, paths: Sequence[str]) -> list[float | None]:
        """When each of ``paths`` was last modified (seconds, the storage's clock), or
        None where nothing is: ``stat``'s ``modified`` for many paths at once, for bulk
        reads such as garbage collection's. Backends with cheap local calls override it
        to make them in one go; this version stats MANY_AT_ONCE paths concurrently (each
        a request on S3), taking the next only when one is done."""
        times: list[float | None] = [None] * len(paths)
        queue = iter(range(len(paths)))

        async def worker() -> None:
            for index in queue:
                with contextlib.suppress(PathNotFound):
                    times[index] = (await self.stat(paths[index])).modified

        await asyncio.gather(*(worker() for _ in range(min(MANY_AT_ONCE, len(paths)))))
        return times

    def local_path(self, path: str) -> Path | None:
        """A real file for ``path`` (for sendfile), or None when the backend has none."""
        return None

    async def redirect_url(self, path: str, method: str) -> str | None:
        """A URL a client can fetch the content from directly, or None."""
        return None

    async def check_health(self) -> None:
        """Raise DriverError if the backend does not answer, for the health check.

        As Distribution's check: a stat of the root, where "not found" still proves the
        backend answers (an empty bucket has no root object). Backends with a stronger
        test override it.
        """
        with contextlib.suppress(PathNotFound):
            await self.stat("/")

    async def remove_leftovers(self, *, apart: bool = False) -> int:
        """Remove what killed writers left behind (the filesystem driver's temporaries);
        how many were removed. Safe while other processes write to the same storage.

        ``apart``: in a process of its own where the driver walks the store itself (the
        filesystem driver), so that the walk does not contend for the caller's
        interpreter lock; a collection asks for it, and does its own work meanwhile."""
        return 0

    async def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release connections and threads."""
