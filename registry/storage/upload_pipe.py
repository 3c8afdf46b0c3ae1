"""The body of an upload request on its way to storage: received chunks gathered into
batches of about a piece, each written and hashed in one thread job while the next
arrives; and, for a body of unknown length, whether it ends within a size."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from registry.oci.digest import Hasher
from registry.storage.driver.base import FileWriter

# Hash and write in pieces of about this size, in a thread, while the next piece arrives.
PIECE_SIZE = 1024 * 1024
# ... or of this many chunks, whichever comes first: a body trickling in tiny chunks
# holds no more than this many objects per upload (and one ``writev`` takes them all).
PIECE_CHUNKS = 1024


async def pipe(body: AsyncIterator[bytes], writer: FileWriter, hasher: Hasher | None) -> int:
    """Copy ``body`` to ``writer`` in batches of about PIECE_SIZE, writing and hashing one
    batch in a thread while the next one is received, so receiving and storing overlap.
    A batch is the chunks as they arrived, never joined: the writer takes them as they
    are (``writev``) and the hash is fed each in turn, so no byte is copied."""
    pending: asyncio.Future[None] | None = None
    written = 0
    try:
        async for batch, size in _batches(body):
            if pending is not None:
                await pending
            # Hashed by the thread that writes (for backends that write in one), right
            # after the write: one hand-over per batch instead of two.
            hashing = None if hasher is None else functools.partial(_update, hasher, batch)
            pending = asyncio.ensure_future(writer.write_pieces(batch, hashing))
            written += size
    finally:
        # Never leave a write running behind the caller's back, even on failure.
        if pending is not None:
            await pending
    return written


def _update(hasher: Hasher, batch: list[bytes]) -> None:
    for chunk in batch:
        hasher.update(chunk)


async def _batches(body: AsyncIterator[bytes]) -> AsyncIterator[tuple[list[bytes], int]]:
    """The body's chunks in lists of about PIECE_SIZE bytes (or PIECE_CHUNKS chunks),
    and each list's size."""
    batch: list[bytes] = []
    size = 0
    async for chunk in body:
        batch.append(chunk)
        size += len(chunk)
        if size >= PIECE_SIZE or len(batch) >= PIECE_CHUNKS:
            yield batch, size
            batch, size = [], 0
    if batch:
        yield batch, size


async def ends_within(body: AsyncIterator[bytes], limit: int) -> tuple[AsyncIterator[bytes], bool]:
    """Whether ``body`` ends within ``limit`` bytes, and the body to read in its place.
    The chunks read to tell are held as received, at most PIECE_CHUNKS of them as in a
    batch (a body trickling in more, tiny ones, counts as not ending within the limit):
    the pipe gathers as much before its first write anyway."""
    head: list[bytes] = []
    size = 0
    async for chunk in body:
        head.append(chunk)
        size += len(chunk)
        if size > limit or len(head) >= PIECE_CHUNKS:
            return _chained(head, body), False
    return _chained(head, None), True


async def _chained(head: list[bytes], rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    if rest is not None:
        async for chunk in rest:
            yield chunk
