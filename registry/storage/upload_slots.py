"""How many batches of request bodies a process holds at once, between receiving them
and having written them: the bound on an upload's memory under many concurrent pushes.

Every upload request reads its body into batches of about a piece (``upload_pipe``) and
hands each to a thread that writes and hashes it. Unbounded, 50 clients pushing an
image each (150 layers of 1 MiB at once) had the registry read every body before the
threads could write them: 150 MiB of bodies held, a peak RSS of 230 MiB (issue 17). A
batch now takes a slot when its first chunk has arrived and gives it back once it is
written; an upload without a slot reads no further, so the rest of its body waits in
the kernel's socket buffer instead of in this process (aiohttp stops reading a
connection once its buffer is full: ``app.READ_BUFSIZE``).

A slot is held while the batch gathers for at most ``gathering`` seconds: a client that
sends part of a batch and then stalls (or trickles) would otherwise hold a slot for as
long as the body timeout allows, and a few such clients would stop every push. Past it
the slot is given back early, and the rest of that request's body takes no slot again
(``Slot.expired``): it holds at most the batch it gathers, a piece, as every body did
before the slots, and each slow request costs the others at most one slot for that
long. The write itself keeps its slot however long it takes: a slow disk slows the
reading down, which is the point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Half as many batches as the filesystem driver has threads (32), leaving threads for
# the commits' flushes. With 50 concurrent image pushes, 32 slots peaked at 135-139 MiB
# and 16 at 122-127, with no throughput difference the (loaded) runs could show
# (docs/performance.md, "upload slots").
SLOTS = 16
# The longest a batch's gathering holds a slot (see the module docstring). A client on
# a local network sends a piece (1 MiB) in milliseconds; the bound held at this value
# in the loaded runs of 50 concurrent pushes (load average 5-16).
GATHERING_SECONDS = 1.0


class UploadSlots:
    """At most ``count`` body batches between receipt and write in this process."""

    def __init__(self, count: int = SLOTS, gathering: float = GATHERING_SECONDS) -> None:
        self._semaphore = asyncio.Semaphore(count)
        self._gathering = gathering

    async def take(self) -> Slot:
        """A slot for a batch that has started to arrive; waits while all are taken."""
        await self._semaphore.acquire()
        return Slot(self._semaphore.release, self._gathering)


class Slot:
    """One batch's slot: given back once, by whichever comes first of ``release`` (the
    batch written, or given up) and the end of its gathering time."""

    __slots__ = ("_give_back", "_timer", "expired")

    def __init__(self, give_back: Callable[[], None], gathering: float) -> None:
        self._give_back: Callable[[], None] | None = give_back
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            gathering, self._expire
        )
        # The batch took longer than its gathering time: its client is slow.
        self.expired = False

    def _expire(self) -> None:
        self.expired = True
        self.release()

    def gathered(self) -> None:
        """The batch is complete: it keeps its slot until it is written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        self.gathered()
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()
