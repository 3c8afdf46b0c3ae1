"""Read-ahead of streamed reads (registry/storage/driver/readahead.py): the backend is read
while the caller is busy, never more than ``depth`` pieces ahead, errors arrive in order,
and closing stops the reading. The S3 driver's reads go through it (test_s3_driver.py
checks it over a real S3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from registry.storage.driver.readahead import read_ahead


class Source:
    """Pieces on demand, counting how many were taken and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.taken = 0
        self.closed = False

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        try:
            for n in range(self.count):
                if n == self.fail_at:
                    raise OSError("the backend broke")
                self.taken += 1
                yield bytes([n])
                await asyncio.sleep(0)
        finally:
            self.closed = True


async def test_the_source_is_read_while_the_caller_is_busy_up_to_the_depth() -> None:
    source = Source(100)
    reader = read_ahead(source.pieces(), depth=4)
    first = await anext(reader)
    await asyncio.sleep(0.5)  # the caller sends the first piece on, slowly
    # Read on meanwhile (it was 1 before: a piece at a time, in turn with the caller),
    # but not past the depth: the queue's four, and one waiting to go in.
    assert 4 <= source.taken <= 6, source.taken
    rest = [piece async for piece in reader]
    assert [first, *rest] == [bytes([n]) for n in range(100)]
    assert source.closed


async def test_an_error_comes_after_the_pieces_before_it() -> None:
    source = Source(10, fail_at=3)
    received = []
    with pytest.raises(OSError, match="the backend broke"):
        async for piece in read_ahead(source.pieces()):
            received.append(piece)
    assert received == [b"\x00", b"\x01", b"\x02"]


async def test_closing_early_stops_reading_and_closes_the_source() -> None:
    source = Source(1000)
    reader = read_ahead(source.pieces(), depth=4)
    async with contextlib.aclosing(reader) as pieces:
        async for _ in pieces:
            break
    assert source.closed
    taken = source.taken
    await asyncio.sleep(0.2)
    assert source.taken == taken <= 6
