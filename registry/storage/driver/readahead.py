"""Read-ahead for a backend's streamed reads: the next pieces are fetched while the
caller is still sending the last ones on, so the backend's connection and the client's
are busy at once instead of in turn.

Without it a pull from S3 alternates: read a piece (aiohttp hands over what it has
buffered, 64-256 KiB), write it to the client, read again, while the S3 socket, its
buffer full, stands still. With it, at most ``depth`` pieces wait in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

DEPTH = 16  # pieces of at most the backend's read size (256 KiB for S3): 4 MiB at most


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_END = object()


async def read_ahead(
    pieces: AsyncGenerator[bytes, None], depth: int = DEPTH
) -> AsyncGenerator[bytes, None]:
    """``pieces``, read by a task of its own up to ``depth`` ahead of the caller. Closing
    this generator (or abandoning it) stops the task and closes ``pieces``."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=depth)

    async def pump() -> None:
        try:
            async for piece in pieces:
                await queue.put(piece)
        except Exception as error:  # the caller's to see, in order
            await queue.put(_Failed(error))
        else:
            await queue.put(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, bytes)
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pieces.aclose()
