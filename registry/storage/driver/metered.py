"""A driver that times every operation of the driver it wraps and reports each to an
observer (the registry's metrics), so no backend has to count anything itself.

A missing path is an answer, not a failure: only other errors are reported as failed.
A read is timed to its first chunk (the backend's latency, not the client's download);
a writer's ``write`` and ``close`` are operations of their own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from time import perf_counter

from registry.storage.driver.base import Content, FileInfo, FileWriter, PathNotFound, StorageDriver

# (driver name, action, seconds, failed)
Observer = Callable[[str, str, float, bool], None]


def _failed(error: BaseException) -> bool:
    return not isinstance(error, PathNotFound)


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
        started = perf_counter()
        try:
            await self._inner.write(data)
        except BaseException as error:
            self._observe(self._driver, "write", perf_counter() - started, _failed(error))
            raise
        self._observe(self._driver, "write", perf_counter() - started, False)

    async def write_pieces(self, pieces: Sequence[bytes]) -> None:
        started = perf_counter()
        try:
            await self._inner.write_pieces(pieces)
        except BaseException as error:
            self._observe(self._driver, "write", perf_counter() - started, _failed(error))
            raise
        self._observe(self._driver, "write", perf_counter() - started, False)

    async def close(self) -> None:
        started = perf_counter()
        try:
            await self._inner.close()
        except BaseException as error:
            self._observe(self._driver, "close", perf_counter() - started, _failed(error))
            raise
        self._observe(self._driver, "close", perf_counter() - started, False)


class MeteredDriver(StorageDriver):
    """``inner`` with every operation reported to ``observe``.

    Each operation is timed in its own frame, with two ``perf_counter`` calls and one
    call of ``observe``: a context manager object per operation (``with timer(...)``)
    cost twice that, about 0.8 µs more per storage operation, two or three of them in a
    manifest GET (docs/performance.md#per-request-overhead).
    """

    def __init__(self, inner: StorageDriver, observe: Observer) -> None:
        self.inner = inner
        self.name = inner.name
        self._observe = observe

    def _done(self, action: str, started: float, error: BaseException) -> None:
        self._observe(self.name, action, perf_counter() - started, _failed(error))

    async def get_content(self, path: str) -> bytes:
        started = perf_counter()
        try:
            content = await self.inner.get_content(path)
        except BaseException as error:
            self._done("get_content", started, error)
            raise
        self._observe(self.name, "get_content", perf_counter() - started, False)
        return content

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        started = perf_counter()
        try:
            await self.inner.put_content(path, content, durable=durable)
        except BaseException as error:
            self._done("put_content", started, error)
            raise
        self._observe(self.name, "put_content", perf_counter() - started, False)

    async def reader(self, path: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        chunks = self.inner.reader(path, offset)
        try:
            started = perf_counter()
            try:
                first = await anext(chunks, None)
            except BaseException as error:
                self._done("reader", started, error)
                raise
            self._observe(self.name, "reader", perf_counter() - started, False)
            if first is None:
                return
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)  # an async generator's, when it is one
            if close is not None:
                await close()

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        started = perf_counter()
        try:
            inner = await self.inner.writer(path, append)
        except BaseException as error:
            self._done("writer", started, error)
            raise
        self._observe(self.name, "writer", perf_counter() - started, False)
        return MeteredWriter(inner, self._observe, self.name)

    async def stat(self, path: str) -> FileInfo:
        started = perf_counter()
        try:
            info = await self.inner.stat(path)
        except BaseException as error:
            self._done("stat", started, error)
            raise
        self._observe(self.name, "stat", perf_counter() - started, False)
        return info

    async def list_dir(self, path: str) -> list[str]:
        started = perf_counter()
        try:
            names = await self.inner.list_dir(path)
        except BaseException as error:
            self._done("list", started, error)
            raise
        self._observe(self.name, "list", perf_counter() - started, False)
        return names

    async def move(self, source: str, destination: str, *, expected: Content | None = None) -> None:
        started = perf_counter()
        try:
            await self.inner.move(source, destination, expected=expected)
        except BaseException as error:
            self._done("move", started, error)
            raise
        self._observe(self.name, "move", perf_counter() - started, False)

    async def delete(self, path: str) -> None:
        started = perf_counter()
        try:
            await self.inner.delete(path)
        except BaseException as error:
            self._done("delete", started, error)
            raise
        self._observe(self.name, "delete", perf_counter() - started, False)

    async def delete_many(self, paths: Sequence[str]) -> list[int | None]:
        started = perf_counter()
        try:
            results = await self.inner.delete_many(paths)
        except BaseException as error:
            self._done("delete_many", started, error)
            raise
        self._observe(self.name, "delete_many", perf_counter() - started, False)
        return results

    def local_path(self, path: str) -> Path | None:
        return self.inner.local_path(path)

    async def redirect_url(self, path: str, method: str) -> str | None:
        started = perf_counter()
        try:
            url = await self.inner.redirect_url(path, method)
        except BaseException as error:
            self._done("redirect_url", started, error)
            raise
        self._observe(self.name, "redirect_url", perf_counter() - started, False)
        return url

    async def remove_leftovers(self) -> int:
        return await self.inner.remove_leftovers()

    async def close(self) -> None:
        await self.inner.close()
