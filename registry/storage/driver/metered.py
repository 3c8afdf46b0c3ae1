"""A driver that times every operation of the driver it wraps and reports each to an
observer (the registry's metrics), so no backend has to count anything itself.

A missing path is an answer, not a failure: only other errors are reported as failed.
A read is timed to its first chunk (the backend's latency, not the client's download),
except one spliced into the client's socket, timed whole;
a writer's ``write`` and ``close`` are operations of their own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from pathlib import Path

from registry.storage.driver.base import Content, FileInfo, FileWriter, PathNotFound, StorageDriver
from registry.storage.driver.steps import Step
from registry.storage.socket_source import PiecesOnFirstUse, SocketSource

# (driver name, action, seconds, failed)
Observer = Callable[[str, str, float, bool], None]


class _Timer:
    """``with _Timer(observe, driver, action):`` reports the block's time and outcome."""

    __slots__ = ("_action", "_driver", "_observe", "_started")

    def __init__(self, observe: Observer, driver: str, action: str) -> None:
        self._observe, self._driver, self._action = observe, driver, action
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        failed = kind is not None and not issubclass(kind, PathNotFound)
        self._observe(self._driver, self._action, time.perf_counter() - self._started, failed)


async def _timed_pieces(
    chunks: AsyncGenerator[bytes, None], timer: _Timer
) -> AsyncGenerator[bytes, None]:
    """``chunks``, with the wait for the first one reported."""
    try:
        with timer:
            first = await anext(chunks, None)
        if first is None:
            return
        yield first
        async for chunk in chunks:
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)  # an async generator's, when it is one
        if close is not None:
            await close()


class _MeteredSource(PiecesOnFirstUse):
    """A read that can also splice itself into a socket (``SocketSource``), metered.

    Iterated, it is timed to its first chunk like any read. Spliced, no chunk passes
    through Python, so the report covers the whole ``send_into`` that starts it: the
    backend's latency and the transfer together (documented in docs/operations.md).
    """

    def __init__(self, inner: AsyncGenerator[bytes, None], timer: _Timer) -> None:
        self._inner = inner
        self._timer = timer
        self._timed = False

    def _make_pieces(self) -> AsyncGenerator[bytes, None]:
        return _timed_pieces(self._inner, self._timer)

    async def _close_unstarted(self) -> None:
        await self._inner.aclose()

    async def send_into(self, out: socket.socket, count: int) -> None:
        assert isinstance(self._inner, SocketSource)  # the driver wraps only those
        if self._timed:
            await self._inner.send_into(out, count)
            return
        self._timed = True
        with self._timer:
            await self._inner.send_into(out, count)


class MeteredWriter(FileWriter):
    def __init__(self, inner: FileWriter, observe: Observer, driver: str) -> None:
        self._inner, self._observe, self._driver = inner, observe, driver

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def base_version(self) -> str | None:
        return self._inner.base_version

    @property
    def version(self) -> str | None:
        return self._inner.version

    async def write(self, data: bytes) -> None:
        with _Timer(self._observe, self._driver, "write"):
            await self._inner.write(data)

    async def write_pieces(
        self, pieces: Sequence[bytes], then: Callable[[], None] | None = None
    ) -> None:
        with _Timer(self._observe, self._driver, "write"):
            await self._inner.write_pieces(pieces, then)

    async def close(self) -> None:
        with _Timer(self._observe, self._driver, "close"):
            await self._inner.close()


class MeteredDriver(StorageDriver):
    """``inner`` with every operation reported to ``observe``."""

    def __init__(self, inner: StorageDriver, observe: Observer) -> None:
        self.inner = inner
        self.name = inner.name
        self._observe = observe

    def _timer(self, action: str) -> _Timer:
        return _Timer(self._observe, self.name, action)

    def _failed(self, action: str, started: float, error: BaseException) -> None:
        # What _Timer.__exit__ reports for an operation that raised.
        failed = not isinstance(error, PathNotFound)
        self._observe(self.name, action, time.perf_counter() - started, failed)

    async def get_content(self, path: str) -> bytes:
        # Timed in place rather than by a _Timer, as the other operations are: four
        # Python calls fewer (the timer's making, _timer, __enter__, __exit__) on the
        # storage operation of every manifest GET by tag (docs/performance.md).
        started = time.perf_counter()
        try:
            content = await self.inner.get_content(path)
        except BaseException as error:
            self._failed("get_content", started, error)
            raise
        self._observe(self.name, "get_content", time.perf_counter() - started, False)
        return content

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        with self._timer("put_content"):
            await self.inner.put_content(path, content, durable=durable)

    async def put_new(self, path: str, content: bytes) -> None:
        with self._timer("put_new"):
            await self.inner.put_new(path, content)

    def reader(self, path: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        chunks = self.inner.reader(path, offset)
        if isinstance(chunks, SocketSource):
            # The wrapper must stay a SocketSource, or the serving side would iterate
            # the pieces through Python instead of splicing them (S3 over plain HTTP).
            return _MeteredSource(chunks, self._timer("reader"))
        return _timed_pieces(chunks, self._timer("reader"))

    async def writer(
        self, path: str, append: bool = False, *, existing: bool = False
    ) -> FileWriter:
        with self._timer("writer"):
            inner = await self.inner.writer(path, append, existing=existing)
        return MeteredWriter(inner, self._observe, self.name)

    async def stat(self, path: str) -> FileInfo:
        with self._timer("stat"):
            return await self.inner.stat(path)

    async def modified_many(self, paths: Sequence[str]) -> list[float | None]:
        with self._timer("modified_many"):
            return await self.inner.modified_many(paths)

    async def list_dir(self, path: str) -> list[str]:
        with self._timer("list"):
            return await self.inner.list_dir(path)

    async def listing_stamp(self, path: str) -> Hashable | None:
        with self._timer("stat"):
            return await self.inner.listing_stamp(path)

    async def move(self, source: str, destination: str, *, expected: Content | None = None) -> None:
        with self._timer("move"):
            await self.inner.move(source, destination, expected=expected)

    async def delete(self, path: str) -> None:
        with self._timer("delete"):
            await self.inner.delete(path)

    async def run_steps(self, steps: Sequence[Step]) -> None:
        # Handed on whole, so that the inner driver does them in one go as it can.
        with self._timer("steps"):
            await self.inner.run_steps(steps)

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        with self._timer("delete_many"):
            return await self.inner.delete_many(paths, sole_file=sole_file)

    def local_path(self, path: str) -> Path | None:
        return self.inner.local_path(path)

    async def redirect_url(self, path: str, method: str) -> str | None:
        with self._timer("redirect_url"):
            return await self.inner.redirect_url(path, method)

    async def remove_leftovers(self, *, apart: bool = False) -> int:
        return await self.inner.remove_leftovers(apart=apart)

    async def close(self) -> None:
        await self.inner.close()
