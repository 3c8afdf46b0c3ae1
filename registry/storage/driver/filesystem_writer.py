"""The filesystem driver's file writer: appends to an upload's data file.

Pieces go to the file as they were received, with one ``writev`` for a batch of them,
so nothing is joined or copied on the way (the request body arrives in chunks of up to
a few hundred KiB; joining them into one buffer first cost a copy of every byte). The
descriptor is used directly, without a Python file object's buffer: a short last piece
is written at once, never held back out of order with a later ``writev``.

Writers and the move of a finished upload. A writer of another process (or instance on
a shared file system) may hold the data file open while the upload is finished and its
file renamed into the blob store: its bytes would then land in the blob, after the bytes
whose digest was verified. Each batch is therefore written under an exclusive ``flock``
on the file and only while the upload's path still names it (``still_named``); the
move takes the same lock and checks the content it was asked to move (``holding``), so
a batch lands either before the check (which then fails) or never (the path is gone).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence

from registry.storage.driver.base import (
    Content,
    ContentChanged,
    FileWriter,
    PathNotFound,
    StorageFull,
)
from registry.storage.driver.durability import start_writeback

# A writer asks the kernel to start writing out every this many bytes: the final flush
# then waits for at most about this much (see docs/performance.md for the measurements).
WRITEBACK_BYTES = 8 * 1024 * 1024
# The most buffers one writev takes (IOV_MAX, 1024 on Linux).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
# A batch of at most this many bytes is written (and hashed) on the caller's thread, the
# event loop: a hand-over to a thread and back costs the loop a wake-up and, under a push
# load, dozens of exchanges of the interpreter lock, more than a small write into the
# page cache (an image's config, a few hundred bytes to a few KiB: one thread job of 11
# per pushed image, issue 17). As the driver's small writes that need no flush
# (``put_new``). Two pages at most: the more pages a write dirties on the loop, the more
# often the kernel may pause it to throttle dirty pages (balance_dirty_pages).
INLINE_WRITE_BYTES = 8 * 1024


@contextlib.contextmanager
def no_space_is_storage_full(path: str) -> Iterator[None]:
    """The driver error StorageFull for a write that found no space (or a quota)."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(path) from None
        raise


def file_version(result: os.stat_result) -> str:
    """A file's version. Appends never change bytes already written (concurrent appends
    both land and the size moves on), so the size alone tells the versions of one file
    apart; the inode and the change time (which no one can set back) also tell apart a
    file replaced by ``put_content`` or truncated by a new writer."""
    return f"{result.st_dev}:{result.st_ino}:{result.st_ctime_ns}"


def holds(result: os.stat_result, expected: Content) -> bool:
    """Whether the file ``result`` describes holds ``expected``. Its change time is not
    compared: a refresh of the modified time (garbage collection's ``lastref`` of a blob
    about to be moved in) changes it, and not the bytes. Of one file, only appends change
    the content of an upload (a truncating writer opens only new uploads), and they
    change its size."""
    same_file = file_version(result).rsplit(":", 1)[0] == expected.version.rsplit(":", 1)[0]
    return same_file and result.st_size == expected.size


def still_named(fd: int, full: str) -> bool:
    """Whether ``full`` still names the file open as ``fd`` (not moved away or deleted)."""
    try:
        named = os.stat(full)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


@contextlib.contextmanager
def holding(full: str, path: str, expected: Content) -> Iterator[None]:
    """Hold the lock writers take on ``full`` while it still holds ``expected`` (else
    ContentChanged, or PathNotFound if it is gone): what the block does with the path,
    such as renaming it, no writer's batch can precede."""
    try:
        # Open for writing: on NFS, flock is a byte-range lock, and an exclusive one
        # on a descriptor opened read-only fails with EBADF (flock(2)).
        fd = os.open(full, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PathNotFound(path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # writers hold it for one batch at a time
        if not still_named(fd, full):
            raise PathNotFound(path)  # moved or deleted by another finisher meanwhile
        if not holds(os.fstat(fd), expected):
            raise ContentChanged(path)
        yield
    finally:
        os.close(fd)  # and the lock with it


def open_for_writing(full: str, append: bool, create: bool = True) -> int:
    """A descriptor of ``full``, at its end (``append``) or emptied; created if missing
    unless not to ``create`` (FileNotFoundError then)."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.open(full, flags | os.O_CREAT if create else flags, 0o666)


def write_all(fd: int, pieces: Sequence[bytes | memoryview]) -> int:
    """Write every piece, in order, with as few ``writev`` calls as the kernel allows
    (it may write less than asked: the rest is written by the next call)."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    total = 0
    while views:
        done = os.writev(fd, views[:_IOV_MAX])
        total += done
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if done:
            views[0] = views[0][done:]
    return total


class FilesystemWriter(FileWriter):
    def __init__(
        self,
        run: Callable[[Callable[[], bool]], Awaitable[bool]],  # runs a job in a thread
        path: str,
        full: str,
        fd: int,
        *,
        writeback: bool,
    ) -> None:
        self._run = run
        self._path = path
        self._full = full
        self._fd = fd
        # One fstat for both: a regular file's size is where its end is (an lseek to
        # the end was a second syscall on the event loop for every open, issue 17).
        opened = os.fstat(fd)
        self._size = opened.st_size
        self._base_version = self._version = file_version(opened)
        self._writeback = writeback
        self._written_back = self._size  # where the next write-back range starts

    @property
    def size(self) -> int:
        return self._size

    @property
    def base_version(self) -> str:
        return self._base_version

    @property
    def version(self) -> str:
        """After ``close``: the version the writes left (taken just before closing)."""
        return self._version

    async def write(self, data: bytes) -> None:
        await self.write_pieces((data,))

    async def write_pieces(
        self, pieces: Sequence[bytes], then: Callable[[], None] | None = None
    ) -> None:
        with no_space_is_storage_full(self._path):
            if self._small(pieces) and self._write(pieces, then, wait=False):
                return
            await self._run(lambda: self._write(pieces, then))

    def _small(self, pieces: Sequence[bytes]) -> bool:
        """Whether a batch is small enough to be written inline: it is, and it starts
        no write-back (whose request may wait for the device)."""
        size = sum(map(len, pieces))
        if size > INLINE_WRITE_BYTES:
            return False
        return not self._writeback or self._size + size - self._written_back < WRITEBACK_BYTES

    def _write(
        self, pieces: Sequence[bytes], then: Callable[[], None] | None = None, wait: bool = True
    ) -> bool:
        """Write the batch, then call ``then``; without ``wait``, only if the lock is
        free at once (False, nothing done, if not): a move holding it flushes first, and
        the event loop must not wait for that."""
        # Under the lock a move takes, and only while the upload's path names the file:
        # a file moved into the blob store takes no more bytes (see the module docstring).
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            if not still_named(self._fd, self._full):
                raise PathNotFound(self._path)
            self._size += write_all(self._fd, pieces)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if self._writeback and self._size - self._written_back >= WRITEBACK_BYTES:
            start_writeback(self._fd, self._written_back, self._size - self._written_back)
            self._written_back = self._size
        if then is not None:
            # In this thread, after the write: each hand-over to a thread and back costs
            # the event loop a wake-up and dozens of GIL exchanges under load (issue 17).
            then()
        return True

    async def close(self) -> None:
        # Nothing is buffered here: closing releases the descriptor, inline, so there is
        # nothing a cancelled request could leave behind.
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with no_space_is_storage_full(self._path):  # network file systems report late
                try:
                    self._version = file_version(os.fstat(fd))
                finally:
                    os.close(fd)
