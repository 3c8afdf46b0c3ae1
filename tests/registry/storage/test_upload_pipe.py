"""``ends_within``: a body of unknown length read only as far as telling whether it ends
within a size, and handed on whole; the chunks held meanwhile are bounded as a batch's.
``pipe``: every upload slot a batch takes is given back, however the body ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.upload_pipe import PIECE_CHUNKS, PIECE_SIZE, ends_within, pipe
from registry.storage.upload_slots import UploadSlots


class Body:
    """An async iterator of ``chunks`` that counts how many were taken."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)
        self.taken = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None
        self.taken += 1
        return chunk


async def _joined(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


async def test_a_body_that_ends_within_the_size_is_handed_on_whole() -> None:
    chunks = [b"a" * 300, b"b" * 300, b"c" * 400]
    body, ended, _ = await ends_within(Body(chunks), 1000)
    assert ended
    assert await _joined(body) == b"".join(chunks)


async def test_a_body_past_the_size_is_read_only_that_far_and_handed_on_whole() -> None:
    chunks = [bytes([n]) * 400 for n in range(6)]
    source = Body(chunks)
    body, ended, _ = await ends_within(source, 1000)
    assert not ended
    assert source.taken == 3  # 1,200 bytes: past the size, and no further
    assert await _joined(body) == b"".join(chunks)


async def test_a_body_of_tiny_chunks_holds_no_more_of_them_than_a_batch() -> None:
    chunks = [b"x"] * (PIECE_CHUNKS * 3)
    source = Body(chunks)
    body, ended, _ = await ends_within(source, 1024 * 1024)
    assert not ended  # undecided within a batch's chunks: treated as a large body
    assert source.taken == PIECE_CHUNKS
    assert await _joined(body) == b"".join(chunks)


class Broken(Exception):
    """The client went away mid-body."""


async def _broken_body() -> AsyncIterator[bytes]:
    yield b"x" * 1000
    raise Broken


async def test_every_slot_comes_back_when_bodies_end_fail_or_are_handed_on(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path, max_threads=2)
    slots = UploadSlots(count=1)
    try:
        # Several batches, a body that breaks off, and one decided by ends_within: with
        # one slot, any slot kept would stop the next pipe for good.
        for round_ in range(3):
            writer = await driver.writer(f"whole{round_}")
            chunks = [b"y" * (PIECE_SIZE // 2)] * 5
            assert await asyncio.wait_for(pipe(Body(chunks), writer, None, slots), 10) == sum(
                map(len, chunks)
            )
            await writer.close()
            writer = await driver.writer(f"broken{round_}")
            with pytest.raises(Broken):
                await asyncio.wait_for(pipe(_broken_body(), writer, None, slots), 10)
            await writer.close()
            writer = await driver.writer(f"decided{round_}")
            body, ended, held = await asyncio.wait_for(ends_within(Body([b"z"] * 3), 10, slots), 10)
            assert ended and held is not None
            assert await asyncio.wait_for(pipe(body, writer, None, slots, held), 10) == 3
            await writer.close()
        assert (tmp_path / "whole2").stat().st_size == 5 * (PIECE_SIZE // 2)
    finally:
        await driver.close()
