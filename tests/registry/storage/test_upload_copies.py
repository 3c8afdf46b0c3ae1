"""An upload's body goes to the file as it arrived: no copy of the bytes on the way.

Received chunks used to be joined into 1 MiB pieces before they were hashed and
written: a copy of every byte pushed, and a second megabyte held per upload in flight.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from registry.oci.digest import parse_digest
from registry.storage.driver.base import FileWriter
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.registry import Registry
from registry.storage.upload_pipe import PIECE_CHUNKS, PIECE_SIZE

CHUNK = 64 * 1024  # what aiohttp hands over per read of a request body, at most
CHUNKS = 64  # 4 MiB: four pieces


async def test_an_upload_is_hashed_and_written_without_copying_its_body(
    tmp_path: Path,
) -> None:
    registry = Registry(FilesystemDriver(tmp_path, max_threads=4))
    try:
        uploads = registry.repository("app").uploads
        upload_id = (await uploads.start()).upload_id
        chunks = [os.urandom(CHUNK) for _ in range(CHUNKS)]

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            status = await uploads.append(upload_id, body())
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert status.size == CHUNK * CHUNKS
        # Joining the chunks of a piece allocates the whole piece at once.
        assert peak < PIECE_SIZE // 2, f"{peak} bytes allocated while appending"

        data = b"".join(chunks)
        digest = parse_digest(f"sha256:{hashlib.sha256(data).hexdigest()}")
        descriptor = await uploads.finish(upload_id, digest)
        assert descriptor.size == len(data)
        assert await registry.blob_store.get(digest) == data
    finally:
        await registry.close()


class RecordingDriver(FilesystemDriver):
    """Records how many chunks each batch handed to a writer holds."""

    batches: list[int]

    async def writer(
        self, path: str, append: bool = False, *, existing: bool = False
    ) -> FileWriter:
        inner = await super().writer(path, append, existing=existing)
        batches = self.batches

        class Recording(FileWriter):
            @property
            def size(self) -> int:
                return inner.size

            async def write(self, data: bytes) -> None:
                await self.write_pieces([data])

            async def write_pieces(
                self, pieces: Sequence[bytes], then: Callable[[], None] | None = None
            ) -> None:
                batches.append(len(pieces))
                await inner.write_pieces(pieces, then)

            async def close(self) -> None:
                await inner.close()

        return Recording()


async def test_a_body_in_tiny_chunks_is_batched_by_count_too(tmp_path: Path) -> None:
    """A client trickling one byte per chunk cannot make an upload hold a megabyte's
    worth of chunk objects: a batch also ends at PIECE_CHUNKS chunks."""
    driver = RecordingDriver(tmp_path, max_threads=4)
    driver.batches = []
    registry = Registry(driver)
    try:
        uploads = registry.repository("app").uploads
        upload_id = (await uploads.start()).upload_id
        count = PIECE_CHUNKS * 3 + 5

        async def body() -> AsyncIterator[bytes]:
            for _ in range(count):
                yield b"x"

        assert (await uploads.append(upload_id, body())).size == count
        assert driver.batches == [PIECE_CHUNKS] * 3 + [5]
    finally:
        await registry.close()
