"""The in-memory driver: a dict of paths, for tests and throw-away registries."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence

from registry.storage.driver.base import (
    Content,
    ContentChanged,
    FileInfo,
    FileWriter,
    PathNotFound,
    StorageDriver,
)

READ_CHUNK = 1024 * 1024


def _normal(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


class InMemoryDriver(StorageDriver):
    name = "inmemory"

    def __init__(self) -> None:
        self._files: dict[str, bytearray] = {}
        self._modified: dict[str, float] = {}

    def _file(self, path: str) -> bytearray:
        try:
            return self._files[_normal(path)]
        except KeyError:
            raise PathNotFound(path) from None

    async def get_content(self, path: str) -> bytes:
        return bytes(self._file(path))

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        self._files[_normal(path)] = bytearray(content)
        self._modified[_normal(path)] = time.time()

    async def reader(self, path: str, offset: int = 0) -> AsyncGenerator[bytes, None]:
        data = self._file(path)
        for start in range(offset, len(data), READ_CHUNK):
            yield bytes(data[start : start + READ_CHUNK])

    async def writer(
        self, path: str, append: bool = False, *, existing: bool = False
    ) -> FileWriter:
        key = _normal(path)
        if append and existing and key not in self._files:
            raise PathNotFound(path)
        if not append or key not in self._files:
            self._files[key] = bytearray()
        self._modified[key] = time.time()
        return _InMemoryWriter(self._files[key])

    async def stat(self, path: str) -> FileInfo:
        key = _normal(path)
        if key in self._files:
            data = self._files[key]
            return FileInfo(key, len(data), self._modified[key], False, _version(data))
        if self._children(key):
            return FileInfo(key, 0, 0.0, True)
        raise PathNotFound(path)

    def _children(self, key: str) -> set[str]:
        prefix = key.rstrip("/") + "/"
        return {p[len(prefix) :].split("/", 1)[0] for p in self._files if p.startswith(prefix)}

    async def list_dir(self, path: str) -> list[str]:
        children = self._children(_normal(path))
        if not children:
            raise PathNotFound(path)
        return sorted(children)

    async def move(self, source: str, destination: str, *, expected: Content | None = None) -> None:
        src = _normal(source)
        if src not in self._files:
            raise PathNotFound(source)
        data = self._files[src]
        if expected is not None and (len(data), _version(data)) != (
            expected.size,
            expected.version,
        ):
            raise ContentChanged(source)
        self._files[_normal(destination)] = self._files.pop(src)
        self._modified[_normal(destination)] = self._modified.pop(src)

    async def delete(self, path: str) -> None:
        if self._remove(path) is None:
            raise PathNotFound(path)

    async def delete_many(
        self, paths: Sequence[str], *, sole_file: str | None = None
    ) -> list[int | None]:
        return [self._remove(path) for path in paths]

    def _remove(self, path: str) -> int | None:
        """Delete a file or a tree: the bytes removed, or None when nothing was there."""
        key = _normal(path)
        doomed = [p for p in self._files if p == key or p.startswith(key.rstrip("/") + "/")]
        if not doomed:
            return None
        removed = 0
        for p in doomed:
            removed += len(self._files.pop(p))
            del self._modified[p]
        return removed


def _version(data: bytearray) -> str:
    # Appends extend the same buffer, a rewrite makes a new one: as the filesystem's inode.
    return str(id(data))


class _InMemoryWriter(FileWriter):
    def __init__(self, buffer: bytearray) -> None:
        self._buffer = buffer

    @property
    def size(self) -> int:
        return len(self._buffer)

    @property
    def base_version(self) -> str:
        return _version(self._buffer)

    @property
    def version(self) -> str:
        return _version(self._buffer)

    async def write(self, data: bytes) -> None:
        self._buffer += data

    async def close(self) -> None:
        pass
