"""The filesystem driver: a directory tree under ``rootdirectory``, Distribution's layout.

Writes, listings and large reads run on a thread pool so the event loop keeps serving;
``stat`` and reads of small files (links, tags, manifests) run inline, since a hop to a
thread costs more than the syscall. Large files are served by the handlers with sendfile
through ``local_path``.

With ``fsync`` (the default) what the registry acknowledges is on stable storage first:
``put_content`` and ``move`` flush the file's data and the directory entries they create
before returning, and writers start write-back while data arrives so that the flush at
``move`` is short (``durability``). Temporaries of killed writers are removed by
``remove_leftovers`` (``temporaries``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from registry.storage.driver import temporaries
from registry.storage.driver.base import FileInfo, FileWriter, PathNotFound, StorageDriver
from registry.storage.driver.durability import make_dirs, start_writeback, sync_dir, sync_file

T = TypeVar("T")
READ_CHUNK = 1024 * 1024
INLINE_READ_LIMIT = 64 * 1024
INLINE_LIST_LIMIT = 16 * 1024  # bytes of directory: a few hundred entries
# A writer asks the kernel to start writing out every this many bytes: the final flush
# then waits for at most about this much (see docs/performance.md for the measurements).
WRITEBACK_BYTES = 8 * 1024 * 1024


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(
        self, root: str | os.PathLike[str], max_threads: int = 32, *, fsync: bool = True
    ) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="fs")

    def _full(self, path: str) -> Path:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"refusing a relative path component in {path!r}")
        return self.root.joinpath(*parts)

    async def _run(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, func)

    async def get_content(self, path: str) -> bytes:
        full = self._full(path)
        try:
            # Links, tags and most manifests are tiny and in the page cache: reading them
            # here costs microseconds, far less than a hop to a thread and back.
            with full.open("rb") as handle:
                if os.fstat(handle.fileno()).st_size <= INLINE_READ_LIMIT:
                    return handle.read()
            return await self._run(full.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    async def put_content(self, path: str, content: bytes) -> None:
        full = self._full(path)

        def write() -> None:
            make_dirs(full.parent, self.fsync)
            fd, temporary = temporaries.create_locked(full)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fdatasync(fd)
                os.replace(temporary, full)
            except BaseException:
                temporaries.discard(fd, temporary)
                raise
            os.close(fd)  # only now: the lock tells sweepers the temporary is alive
            if self.fsync:
                sync_dir(full.parent)

        await self._run(write)

    async def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
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

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        full = self._full(path)

        # Opened (and closed) inline: if the request is cancelled, a handle opened in a
        # thread could be lost on its way back and leak. Writers only write upload areas,
        # which need no durable directories: ``move`` flushes what it makes visible.
        full.parent.mkdir(parents=True, exist_ok=True)
        handle = full.open("ab" if append else "wb")
        return _FilesystemWriter(self, handle, handle.tell(), writeback=self.fsync)

    async def stat(self, path: str) -> FileInfo:
        full = self._full(path)
        try:
            result = full.stat()  # one cached-metadata syscall: inline, like get_content
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        return FileInfo(path, result.st_size, result.st_mtime, stat.S_ISDIR(result.st_mode))

    async def list_dir(self, path: str) -> list[str]:
        full = self._full(path)
        try:
            # A directory's own size tells roughly how many entries it holds: small ones
            # (a repository's few subdirectories) are listed inline, big ones in a thread.
            if full.stat().st_size <= INLINE_LIST_LIMIT:
                return os.listdir(full)
            return await self._run(lambda: os.listdir(full))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    async def move(self, source: str, destination: str) -> None:
        src, dst = self._full(source), self._full(destination)

        def move() -> None:
            if self.fsync:
                # The data first, then the name: a blob is never durably named while its
                # content could still be lost.
                sync_file(src)
            make_dirs(dst.parent, self.fsync)
            os.replace(src, dst)
            if self.fsync:
                sync_dir(dst.parent)

        try:
            await self._run(move)
        except FileNotFoundError:
            raise PathNotFound(source) from None

    async def delete(self, path: str) -> None:
        full = self._full(path)

        def delete() -> None:
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            else:
                full.unlink()

        try:
            await self._run(delete)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    def local_path(self, path: str) -> Path | None:
        return self._full(path)

    async def remove_leftovers(self) -> int:
        return await self._run(lambda: temporaries.remove_abandoned(self.root))

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


class _FilesystemWriter(FileWriter):
    def __init__(
        self, driver: FilesystemDriver, handle: BinaryIO, size: int, *, writeback: bool
    ) -> None:
        self._driver = driver
        self._handle = handle
        self._size = size
        self._writeback = writeback
        self._written_back = size  # where the next write-back range starts

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        await self._driver._run(lambda: self._write(data))

    def _write(self, data: bytes) -> None:
        self._handle.write(data)
        self._size += len(data)
        if self._writeback and self._size - self._written_back >= WRITEBACK_BYTES:
            self._handle.flush()
            start_writeback(
                self._handle.fileno(), self._written_back, self._size - self._written_back
            )
            self._written_back = self._size

    async def close(self) -> None:
        # Pieces of a megabyte bypass the write buffer, so closing flushes at most a small
        # tail and releases the descriptor: done inline, there is nothing to cancel.
        self._handle.close()
