"""The body of an upload request on its way to storage: received chunks gathered into
batches of about a piece, each written and hashed in one thread job while the next
arrives, each holding one of the process's upload slots (``upload_slots``) from its
first chunk until written; and, for a body of unknown length, whether it ends within a
size."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from registry.oci.digest import Hasher
from registry.storage.driver.base import FileWriter
from registry.storage.upload_slots import Slot, UploadSlots

# Hash and write in pieces of about this size, in a thread, while the next piece arrives.
PIECE_SIZE = 1024 * 1024
# ... or of this many chunks, whichever comes first: a body trickling in tiny chunks
# holds no more than this many objects per upload (and one ``writev`` takes them all).
PIECE_CHUNKS = 1024


async def pipe(
    body: AsyncIterator[bytes],
    writer: FileWriter,
    hasher: Hasher | None,
    slots: UploadSlots | None = None,
    held: Slot | None = None,
) -> int:
    """Copy ``body`` to ``writer`` in batches of about PIECE_SIZE, writing and hashing one
    batch in a thread while the next one is received, so receiving and storing overlap.
    A batch is the chunks as they arrived, never joined: the writer takes them as they
    are (``writev``) and the hash is fed each in turn, so no byte is copied. With
    ``slots``, each batch takes one once its first chunk has arrived and gives it back
    once written: no more is read meanwhile, the rest waits in the socket. ``held``: the
    slot of a first batch already read (``ends_within``'s), which this takes over."""
    writes = _Writes(writer, hasher)
    batch: list[bytes] = []
    size = 0
    slot = held
    try:
        async for chunk in body:
            if slot is None and slots is not None:
                slot = await slots.take()
            batch.append(chunk)
            size += len(chunk)
            if size >= PIECE_SIZE or len(batch) >= PIECE_CHUNKS:
                if slot is not None and slot.expired:
                    slots = None  # a slow client's body: no more slots (upload_slots)
                handed, slot = slot, None
                await writes.submit(batch, size, handed)
                batch, size = [], 0
        if batch:
            handed, slot = slot, None
            await writes.submit(batch, size, handed)
    finally:
        if slot is not None:
            slot.release()
        # Never leave a write running behind the caller's back, even on failure.
        await writes.settled()
    return writes.written


class _Writes:
    """One upload's batches on their way to the writer: one in a thread at a time."""

    def __init__(self, writer: FileWriter, hasher: Hasher | None) -> None:
        self._writer = writer
        self._hasher = hasher
        self._pending: asyncio.Future[None] | None = None
        self.written = 0

    async def submit(self, batch: list[bytes], size: int, slot: Slot | None) -> None:
        """Write and hash ``batch`` once the one before it is written; ``slot`` (which
        this takes over) is given back when it is written, or at once on failure."""
        try:
            if slot is not None:
                slot.gathered()
            await self.settled()
            # Hashed by the thread that writes (for backends that write in one), right
            # after the write: one hand-over per batch instead of two.
            hashing = (
                None if self._hasher is None else functools.partial(_update, self._hasher, batch)
            )
            self._pending = asyncio.ensure_future(self._writer.write_pieces(batch, hashing))
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        if slot is not None:
            self._pending.add_done_callback(lambda _: slot.release())
        self.written += size

    async def settled(self) -> None:
        if self._pending is not None:
            await self._pending


def _update(hasher: Hasher, batch: list[bytes]) -> None:
    for chunk in batch:
        hasher.update(chunk)


async def ends_within(
    body: AsyncIterator[bytes], limit: int, slots: UploadSlots | None = None
) -> tuple[AsyncIterator[bytes], bool, Slot | None]:
    """Whether ``body`` ends within ``limit`` bytes, the body to read in its place, and
    the slot (of ``slots``) its chunks read so far hold, for ``pipe`` to take over. They
    are held as received, at most PIECE_CHUNKS of them as in a batch (a body trickling in
    more, tiny ones, counts as not ending within the limit): the pipe gathers as much
    before its first write anyway."""
    head: list[bytes] = []
    size = 0
    slot: Slot | None = None
    try:
        async for chunk in body:
            if slot is None and slots is not None:
                slot = await slots.take()
            head.append(chunk)
            size += len(chunk)
            if size > limit or len(head) >= PIECE_CHUNKS:
                return _chained(head, body), False, slot
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    return _chained(head, None), True, slot


async def _chained(head: list[bytes], rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    if rest is not None:
        async for chunk in rest:
            yield chunk
