"""The filesystem driver: a directory tree under ``rootdirectory``, Distribution's layout.

Writes, listings and large reads run on a thread pool so the event loop keeps serving;
``stat``, reads of small files (links, tags, manifests) and small writes that need no
flush (an upload's start time, its hash states, a batch of its data of at most 8 KiB
whose lock is free) run inline, since a hop to a thread costs more than the syscalls.
Large files are served by the handlers with sendfile through ``local_path``.

With ``fsync`` (the default) what the registry acknowledges is on stable storage first:
``put_content`` and ``move`` flush the file's data and the directory entries they create
before returning, and writers (``filesystem_writer``) start write-back while data
arrives so that the flush at ``move`` is short (``durability``). Temporaries of killed
writers are removed by ``remove_leftovers`` (``temporaries``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import stat
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from registry.storage.driver import temporaries
from registry.storage.driver.base import (
    Content,
    FileInfo,
    FileWriter,
    PathNotFound,
    StorageDriver,
    StorageUnavailable,
    StorageUnwritable,
)
from registry.storage.driver.filesystem_delete import (
    DELETE_MIN_BATCH,
    deleted_all,
    runs_by_parent,
)
from registry.storage.driver.filesystem_deleters import CHILD_MIN_BATCH, DeletingChildren
from registry.storage.driver.filesystem_staged import STAGING, run_staged
from registry.storage.driver.filesystem_steps import (
    LocalMove,
    LocalPut,
    LocalStep,
    delete_path,
    move_file,
    put_file,
    run_in_turn,
    touch_file,
)
from registry.storage.driver.filesystem_writer import (
    FilesystemWriter,
    file_version,
    no_space_is_storage_full,
    open_for_writing,
)
from registry.storage.driver.metadata_order import device_in_order
from registry.storage.driver.steps import Move, Put, Step, Touch

log = logging.getLogger("registry.storage")

T = TypeVar("T")
READ_CHUNK = 1024 * 1024
INLINE_READ_LIMIT = 64 * 1024
# What the first read of a small file asks for: a page, more than any link or tag holds.
FIRST_READ = 4096
# Files written without a flush up to this size are written inline (see put_content).
INLINE_WRITE_LIMIT = 64 * 1024
INLINE_LIST_LIMIT = 16 * 1024  # bytes of directory: a few hundred entries
# put_new's open: a new file, never one that is there.
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
# ``modified_many``: threads sharing a bulk read, and the fewest paths one takes (a hop
# to a thread costs about 50 us, ten stats).
STAT_THREADS = 4
STAT_MIN_BATCH = 256
# How old a directory's modification time must be before a listing stamped with it is
# vouched for. The kernel stamps times from a clock that ticks every few milliseconds (and
# some filesystems keep whole seconds; NFS takes its server's clock), so an entry added in
# the same tick as the change before it leaves the time as it was: a listing read in
# between would miss it and yet look current. Git treats "racily clean" entries the same.
RACY_STAMP_NS = 2_000_000_000

# Every pull of a blob asks for its file (``local_path``): building a Path parses and
# interns each component of a long path, which cost more than the rest of the storage
# look-up. The same few blobs are pulled over and over, and a Path is immutable, so the
# last ones are remembered (a few hundred bytes each).
LOCAL_PATHS_KEPT = 4096


@functools.lru_cache(maxsize=LOCAL_PATHS_KEPT)
def _local_file(os_path: str) -> Path:
    return Path(os_path)


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(
        self, root: str | os.PathLike[str], max_threads: int = 32, *, fsync: bool = True
    ) -> None:
        self.root = Path(root)
        self._root = os.fspath(self.root).rstrip("/") or "/"
        self.fsync = fsync
        self._threads = max_threads
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="fs")
        self._children: DeletingChildren | None = None
        self._staging = self.root / STAGING
        self._looked = False  # at the store's filesystem (``_ordered_device``)
        self._in_order_device: int | None = None  # the store's, where in order

    def delete_in_children(self, count: int) -> None:
        """Have ``delete_many`` run in ``count`` processes of their own from now on
        (``filesystem_deleters``: no interpreter lock shared with the caller); for a
        one-shot collection, which has the machine's cores to itself."""
        self._children = DeletingChildren(self._root, count)

    def _full(self, path: str) -> Path:
        return Path(self._os_path(path))

    def _os_path(self, path: str) -> str:
        """The local path of a driver path, as a string: stat, listing and deleting need
        no Path object, and building one costs more than the syscall on hot paths."""
        if path[:1] == "/" and path[-1:] != "/" and "//" not in path and "/." not in path:
            # The storage layer's own paths, nearly every call (117,000 in a collection
            # of the bench's store): absolute, no empty, "." or ".." part (each part
            # follows a slash), so joining them is the root and the path as they are.
            return self._root + path
        parts = [*filter(None, path.split("/"))]  # no comprehension frame: every read
        if "." in parts or ".." in parts:
            raise ValueError(f"refusing a relative path component in {path!r}")
        return "/".join((self._root, *parts))

    async def _run(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, func)

    async def get_content(self, path: str) -> bytes:
        full = self._os_path(path)
        try:
            # Links, tags and most manifests are tiny and in the page cache: reading them
            # here costs microseconds, far less than a hop to a thread and back.
            small = _read_small(full, INLINE_READ_LIMIT)
            if small is not None:
                return small
            return await self._run(Path(full).read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        full = self._full(path)
        flush = self.fsync and durable
        if not durable and len(content) <= INLINE_WRITE_LIMIT:
            # Nothing to wait for (an upload's start time, a hash state): a few
            # page-cache syscalls, cheaper inline than a hop to a thread, whose every
            # syscall then contends with the loop for the GIL (issue 17: about 70
            # futex calls per hop under a push load). Links, tags and manifests keep
            # the thread even with fsync off: their directories may need creating,
            # and on a network filesystem a hung server must not freeze the loop.
            put_file(full, path, content, flush)
        else:
            await self._run(
                lambda: put_file(
                    full, path, content, flush, ordered_device=self._ordered_device(flush)
                )
            )

    async def put_new(self, path: str, content: bytes) -> None:
        if len(content) > INLINE_WRITE_LIMIT:
            await super().put_new(path, content)
            return
        # Written in place, inline: no reader knows the name yet, so the temporary,
        # its lock and the rename of put_content (six syscalls on the event loop, each
        # a chance for a waiting file thread to take the interpreter lock, issue 17)
        # buy nothing. Only a purge listing every upload could look: a small file
        # written in one call it sees empty (the size is set after the copy), which it
        # takes for no start time, or whole. A crash leaves at worst an empty file or
        # an empty directory in an upload whose id was never answered, which the purge
        # removes by its age (purge._started_at).
        full = self._os_path(path)
        directory = os.path.dirname(full)
        with no_space_is_storage_full(path):
            try:
                os.mkdir(directory)  # new, as a rule: one mkdir, no stat of it first
            except FileExistsError:
                pass
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
            fd = os.open(full, NEW_FILE, 0o644)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    async def reader(self, path: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        full = self._full(path)
        try:
            handle = await self._run(lambda: full.open("rb"))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None
        try:
            await self._run(lambda: handle.seek(offset))
            while chunk := await self._run(lambda: handle.read(READ_CHUNK)):
                yield chunk
        finally:
            await self._run(handle.close)

    async def writer(
        self, path: str, append: bool = False, *, existing: bool = False
    ) -> FileWriter:
        # A string, not a Path: parsing one cost more than the open (issue 17).
        full = self._os_path(path)
        create = not (append and existing)
        # Opened (and closed) inline: if the request is cancelled, a handle opened in a
        # thread could be lost on its way back and leak. Writers only write upload areas,
        # which need no durable directories: ``move`` flushes what it makes visible.
        with no_space_is_storage_full(path):
            try:
                fd = open_for_writing(full, append, create)
            except NotADirectoryError:
                if create:
                    raise
                raise PathNotFound(path) from None
            except FileNotFoundError:
                if not create:
                    raise PathNotFound(path) from None
                # Made only when missing: an upload's directory is there from its start
                # (the start time's write), so every later open spares a mkdir and its
                # stat, two syscalls on the loop each (issue 17).
                os.makedirs(os.path.dirname(full), exist_ok=True)
                fd = open_for_writing(full, append)
        return FilesystemWriter(self._run, path, full, fd, writeback=self.fsync)

    async def stat(self, path: str) -> FileInfo:
        full = self._os_path(path)
        try:
            result = os.stat(full)  # one cached-metadata syscall: inline, like get_content
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        return FileInfo(
            path,
            result.st_size,
            result.st_mtime,
            stat.S_ISDIR(result.st_mode),
            None if stat.S_ISDIR(result.st_mode) else file_version(result),
        )

    async def modified_many(self, paths: Sequence[str]) -> list[float | None]:
        # One ``stat`` call each and nothing else (no FileInfo, no coroutine, no hop to
        # a thread per path): garbage collection reads the ``lastref`` of every unmarked
        # blob twice, 40,000 reads on the bench's store, which cost about 25 us each one
        # ``stat`` coroutine at a time against 3 us here. A few threads share them, so
        # reads of metadata not yet cached wait for the disk together.
        full = [self._os_path(path) for path in paths]
        size = max(STAT_MIN_BATCH, -(-len(full) // STAT_THREADS))
        loop = asyncio.get_running_loop()
        runs = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, _modified_times, full[i : i + size])
                for i in range(0, len(full), size)
            )
        )
        return [modified for run in runs for modified in run]

    async def list_dir(self, path: str) -> list[str]:
        full = self._os_path(path)
        try:
            # A directory's own size tells roughly how many entries it holds: small ones
            # (a repository's few subdirectories) are listed inline, big ones in a thread.
            if os.stat(full).st_size <= INLINE_LIST_LIMIT:
                return os.listdir(full)
            return await self._run(lambda: os.listdir(full))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    async def listing_stamp(self, path: str) -> Hashable | None:
        full = self._os_path(path)
        try:
            result = os.stat(full)  # inline: one cached-metadata syscall
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        if not stat.S_ISDIR(result.st_mode):
            raise PathNotFound(path)
        # Adding or removing an entry sets the time; a directory removed and made again
        # is another inode. A time in the future (another machine's clock) is too recent.
        if time.time_ns() - result.st_mtime_ns < RACY_STAMP_NS:
            return None
        return (result.st_dev, result.st_ino, result.st_mtime_ns)

    async def move(self, source: str, destination: str, *, expected: Content | None = None) -> None:
        src, dst, flush = self._full(source), self._full(destination), self.fsync
        await self._run(
            lambda: move_file(
                src,
                dst,
                source,
                destination,
                expected,
                flush,
                ordered_device=self._ordered_device(flush),
            )
        )

    async def delete(self, path: str) -> None:
        full = self._full(path)
        await self._run(lambda: delete_path(full, path))

    async def run_steps(self, steps: Sequence[Step]) -> None:
        # One thread job for them all: a blob's commit (move, link, the upload's
        # removal) was three, each a wake-up of a worker and, under a push load, dozens
        # of exchanges of the interpreter lock with the loop (issue 17).
        local = [self._local_step(step) for step in steps]  # paths checked before any is done
        await self._run(lambda: self._run_local(local))

    def _run_local(self, steps: Sequence[LocalStep]) -> None:
        """``run_steps`` in a file thread. Flushing, where the filesystem commits metadata
        in order, every file's data is flushed together first (``filesystem_staged``: on
        a journal one commit for all their data and one for all their names); elsewhere
        step by step, each as durable as on its own before the next."""
        flushing = self.fsync and any(isinstance(s, LocalPut | LocalMove) for s in steps)
        device = self._ordered_device(flushing)
        if device is not None:
            run_staged(steps, self._staging, device)
        else:
            run_in_turn(steps, self.fsync)

    def _ordered_device(self, flushing: bool) -> int | None:
        """Flushing on a store whose filesystem commits directory changes in order
        (``metadata_order``): that filesystem's device (a write there flushes only its
        last name's directory); otherwise None. Looked up once, in a file thread, and
        said in the log."""
        if not flushing:
            return None
        if not self._looked:
            self._in_order_device = device_in_order(self.root)
            self._looked = True
            if self._in_order_device is not None:
                log.info(
                    "storage: %s commits directory changes in order (a journal): a "
                    "write of several files flushes their data first, then their names",
                    self._root,
                )
            else:
                log.info(
                    "storage: %s: a write of several files flushes each file's data and "
                    "name before the next (no journal known to keep metadata in order)",
                    self._root,
                )
        return self._in_order_device

    def _local_step(self, step: Step) -> LocalStep:
        if isinstance(step, Put):
            return LocalPut(self._full(step.path), step.path, step.content)
        if isinstance(step, Move):
            return LocalMove(
                self._full(step.source),
                self._full(step.destination),
                step.source,
                step.destination,
                step.expected,
            )
        if isinstance(step, Touch):
            touched, name = self._full(step.path), step.path
            return lambda: touch_file(touched, name)
        full, path = self._full(step.path), step.path

        def delete() -> None:
            with contextlib.suppress(PathNotFound):
                delete_path(full, path)

        return delete

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        # Where each freed block waits for the device (a synchronous discard: an rmdir
        # took 0.3 ms here, 6 ms under load) only many deletions in flight keep it busy,
        # so the paths are spread over every thread of the pool (20,000 blob directories:
        # 2.65 s on 32 threads, 56 s on one). An unlink or rmdir also holds its parent
        # directory's lock for part of its wait: 3,000 directories took 1.9-3.1 s on 32
        # threads in one parent, 0.4-1.0 s in 256 parents (17-19 s on one thread). So
        # each thread takes a run of the paths sorted by parent, and a parent's paths are
        # never cut between two runs: threads waiting for the lock of a directory whose
        # holder runs spin on it (a fifth of a collection's CPU went there).
        order = sorted(range(len(paths)), key=lambda i: paths[i].rpartition("/")[0])
        full = [self._os_path(paths[i]) for i in order]
        children = self._children
        if children is None:
            size = max(DELETE_MIN_BATCH, -(-len(paths) // self._threads))
        else:
            size = max(CHILD_MIN_BATCH, -(-len(paths) // children.count))

        async def run_deleted(run: Sequence[str]) -> list[int | None]:
            done = None if children is None else await children.deleted_all(run, sole_file)
            if done is None:  # in a thread: no children, or theirs failed
                done = await asyncio.get_running_loop().run_in_executor(
                    self._pool, deleted_all, run, sole_file
                )
            return done

        runs = await asyncio.gather(*(run_deleted(run) for run in runs_by_parent(full, size)))
        done: list[int | None] = [None] * len(paths)
        for index, deleted in zip(order, (d for run in runs for d in run), strict=True):
            done[index] = deleted
        return done

    def local_path(self, path: str) -> Path | None:
        return _local_file(self._os_path(path))

    async def remove_leftovers(self, *, apart: bool = False) -> int:
        if apart:
            return await temporaries.remove_abandoned_apart(self.root)
        return await self._run(lambda: temporaries.remove_abandoned(self.root))

    async def check_health(self) -> None:
        # Stricter than Distribution's stat of "/", which passes when the root is missing:
        # the registry makes its root at start-up, so a missing one means the volume is
        # gone (unmounted, deleted) and every pull would fail. In a thread: a hung
        # network filesystem must not block the event loop.
        def check() -> None:
            try:
                result = os.stat(self._root)
            except OSError as error:
                reason = error.strerror or type(error).__name__
                raise StorageUnavailable(f"storage root {self._root}: {reason}") from None
            if not stat.S_ISDIR(result.st_mode):
                raise StorageUnavailable(f"storage root {self._root} is not a directory")

        await self._run(check)

    async def close(self) -> None:
        if self._children is not None:
            await self._children.close()
        self._pool.shutdown(wait=True)


def check_writable_root(root: str | os.PathLike[str]) -> None:
    """Create ``root`` if it is missing and write (and remove) a file in it, so a registry
    that could not store anything refuses to start instead of failing every push later.
    Raises StorageUnwritable naming the directory."""
    directory = Path(root)
    probe = directory / f".write-check-{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StorageUnwritable(str(directory), error.strerror or str(error)) from None


def _modified_times(full: Sequence[str]) -> list[float | None]:
    """The modified time of each local path, None where there is nothing."""
    times: list[float | None] = []
    for path in full:
        try:
            times.append(os.stat(path).st_mtime)
        except (FileNotFoundError, NotADirectoryError):
            times.append(None)
    return times


def _read_small(path: str, limit: int) -> bytes | None:
    """The whole file at ``path`` if it holds at most ``limit`` bytes, else None.

    With the file descriptor alone: ``open()``'s buffered file object cost 6.4 us a read
    against 2.7 here, on the path every manifest GET by tag takes (its tag link). A file
    shorter than :data:`FIRST_READ` (links, tags: 71 bytes) is read whole by the first
    read, which comes back short at its end: no ``fstat`` to size it, one system call of
    four fewer (docs/performance.md#per-request-overhead).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, FIRST_READ)  # a directory raises IsADirectoryError here
        if len(data) < FIRST_READ:  # the end of the file: the usual case, in one read
            return data if len(data) <= limit else None  # a limit under a page holds too
        size = os.fstat(fd).st_size
        if size > limit:
            return None
        parts = [data, os.read(fd, max(size + 1 - len(data), 1))]
        if len(data) + len(parts[1]) <= size:
            return b"".join(parts)  # the end of the file
        # It grew since the fstat: read on to its end, as a file object's read() would.
        while chunk := os.read(fd, 1 << 16):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)
