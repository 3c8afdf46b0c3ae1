"""``ends_within``: a body of unknown length read only as far as telling whether it ends
within a size, and handed on whole; the chunks held meanwhile are bounded as a batch's."""

from __future__ import annotations

from collections.abc import AsyncIterator

from registry.storage.upload_pipe import PIECE_CHUNKS, ends_within


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
    body, ended = await ends_within(Body(chunks), 1000)
    assert ended
    assert await _joined(body) == b"".join(chunks)


async def test_a_body_past_the_size_is_read_only_that_far_and_handed_on_whole() -> None:
    chunks = [bytes([n]) * 400 for n in range(6)]
    source = Body(chunks)
    body, ended = await ends_within(source, 1000)
    assert not ended
    assert source.taken == 3  # 1,200 bytes: past the size, and no further
    assert await _joined(body) == b"".join(chunks)


async def test_a_body_of_tiny_chunks_holds_no_more_of_them_than_a_batch() -> None:
    chunks = [b"x"] * (PIECE_CHUNKS * 3)
    source = Body(chunks)
    body, ended = await ends_within(source, 1024 * 1024)
    assert not ended  # undecided within a batch's chunks: treated as a large body
    assert source.taken == PIECE_CHUNKS
    assert await _joined(body) == b"".join(chunks)
