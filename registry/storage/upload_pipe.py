"""An upload's body on its way to the data file and the running hash, and the bound on
the bytes the uploads of one process hold on that way together.

Each upload writes (one ``writev``) and hashes, in threads, one batch of received chunks
at a time, of PIECE_SIZE bytes or PIECE_CHUNKS chunks (each batch is a thread job for
each, whose hand-overs of the GIL cost more than the work for small batches); a full
batch stops the reading of the body until the one before is done. A batch that is not
full goes when the body ends, when the budget below is exhausted, when the batch before
it is done, or once no chunk came for PAUSE seconds: a client that pauses leaves nothing
waiting here for longer than that.

``BodyBudget`` bounds the bytes received and not yet written and hashed, all uploads of
the process together: over its limit, an upload reads no more of its body until some are
given back. What is not read stays in aiohttp's buffer of the connection (it stops
reading the socket at a fixed mark) and in the kernel's socket buffer, outside this
process's memory, and TCP slows the client down. Without it, 50 clients pushing 4 blobs
each at once held a megabyte or two per upload: a peak RSS of 230 MiB.

Nothing is reserved while an upload waits for its client, so slow clients cannot hold
the budget: the limit can be exceeded by the one read each upload takes after it was
let through (aiohttp's buffer of the connection, already in memory).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from registry.oci.digest import Hasher
from registry.storage.driver.base import FileWriter

# Write and hash batches of at most this many bytes...
PIECE_SIZE = 1024 * 1024
# ... or of this many chunks, whichever comes first: a body trickling in tiny chunks
# holds no more than this many objects per upload (and one ``writev`` takes them all).
PIECE_CHUNKS = 1024
# Bytes received and not yet written and hashed, all uploads of a process together.
BODY_BUDGET = 16 * 1024 * 1024
# A batch that is not full goes after this many seconds without a chunk.
PAUSE = 0.02


class BodyBudget:
    """The bytes of request bodies this process's uploads hold between reading and
    writing them, and the wait for room under ``limit``, first come first served.

    Room wakes one waiter at a time, and each one let through wakes the next while room
    is left: hundreds of waiting uploads are not all woken (to find the room gone) each
    time a batch is written."""

    def __init__(self, limit: int = BODY_BUDGET) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def admit(self) -> None:
        """Return once the uploads hold less than the limit (at once if they do and no
        one waits before this one)."""
        if self.held < self.limit and not self._waiters:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            while True:
                await waiter
                if self.held < self.limit:
                    break
                waiter = loop.create_future()  # woken, and the room was gone: first again
                self._waiters.appendleft(waiter)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken as it was cancelled: the next one gets the turn
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if self.held < self.limit:
            self._wake()

    def take(self, size: int) -> None:
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size
        if self.held < self.limit:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


async def pipe(
    body: AsyncIterator[bytes], writer: FileWriter, hasher: Hasher | None, budget: BodyBudget
) -> int:
    """Copy ``body`` to ``writer`` and ``hasher`` in batches (see the module docstring);
    the bytes written. Returns, or raises, only once no batch is being written."""
    flow = _Flow(writer, hasher, budget)
    chunks = aiter(body)
    try:
        while True:
            if budget.held >= budget.limit:
                flow.ship()  # what this upload holds goes first: it may be the room
                await budget.admit()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            await flow.add(chunk)
        await flow.finish()
    finally:
        # Never leave a write running behind the caller's back, even on failure.
        await flow.stop()
    return flow.written


class _Flow:
    """One upload's batches: the one being written and hashed, and the next one."""

    def __init__(self, writer: FileWriter, hasher: Hasher | None, budget: BodyBudget) -> None:
        self._writer = writer
        self._hasher = hasher
        self._budget = budget
        self._batch: list[bytes] = []
        self._size = 0
        # Writes the batches one after the other while there are any; None when idle.
        self._job: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        # The batch a job was started for, until it starts (a job cancelled before it
        # starts runs none of its code: ``stop`` gives the batch's bytes back then).
        self._handed: tuple[list[bytes], int] = ([], 0)
        self.written = 0

    async def add(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._budget.take(len(chunk))
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size < PIECE_SIZE and len(self._batch) < PIECE_CHUNKS:
            if self._job is None and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(PAUSE, self._paused)
        elif self._job is None:
            self.ship()
        else:
            await self._job  # it takes this batch too before it ends

    def ship(self) -> None:
        """Start writing the batch, unless one is being written (it takes this one next)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._job is None and self._batch and not self._stopped:
            # Taken now: chunks added before the job starts go in the next batch.
            self._handed = self._take()
            self._job = asyncio.ensure_future(self._drain())

    def _paused(self) -> None:
        self._timer = None
        self.ship()

    async def finish(self) -> None:
        """Write what is left; raise what a write or the hash raised."""
        self.ship()
        if self._job is not None:
            await self._job
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        """Ship nothing more; wait for the batch in flight; give back what was kept."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._job is not None:
                await self._job
        finally:
            self._budget.give(self._size + self._handed[1])
            self._batch, self._size = [], 0
            self._handed = ([], 0)

    def _take(self) -> tuple[list[bytes], int]:
        batch, size = self._batch, self._size
        self._batch, self._size = [], 0
        return batch, size

    async def _drain(self) -> None:
        try:
            first, self._handed = self._handed, ([], 0)
            await self._write(*first)
            while self._batch and self._error is None and not self._stopped:
                await self._write(*self._take())
        finally:
            self._job = None  # set before the task ends: whoever awaited it sees it idle

    async def _write(self, batch: list[bytes], size: int) -> None:
        jobs: list[asyncio.Future[None]] = [asyncio.ensure_future(self._writer.write_pieces(batch))]
        if self._hasher is not None:
            loop = asyncio.get_running_loop()
            jobs.append(loop.run_in_executor(None, _update, self._hasher, batch))
        try:
            # Both to the end, even if one fails: no thread is left with the batch.
            results = await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            self._budget.give(size)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self._error = errors[0]
        else:
            self.written += size


def _update(hasher: Hasher, batch: list[bytes]) -> None:
    for chunk in batch:
        hasher.update(chunk)
