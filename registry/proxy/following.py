"""A client that asks for a blob once its download already sends bytes: it is sent the
upload's data file itself, by the kernel, as far as it is written, and follows it as it
grows.

The file is opened once. Committing the upload renames it into the blob store, and a
failed download unlinks it; either way the open handle goes on naming the same bytes, so
the client never switches sources. The last byte waits for the digest check, as for the
clients of the live stream: a client of a download that fails sees its transfer fail.

Such a client holds no buffer of its own (the bytes go from the page cache to its socket
with ``sendfile``): fifty clients that came late cost the mirror no more memory than one.
They used to read the file back in 1 MiB pieces, about 4 MiB of peak resident memory
each (docs/performance.md, "late joiners").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

# How often a client that has everything written so far looks again. The download
# writes about a MiB per batch; polling costs a ``fstat`` per client per interval.
FOLLOW_INTERVAL = 0.02


class FollowFailed(Exception):
    """The download ended without a verified blob: the client's transfer must fail."""


class UploadFollower:
    """One late client's reading of a download's data file: the ranges of it that may be
    sent, as they become so. Close it (``with``) when done: it holds a descriptor."""

    def __init__(self, handle: BinaryIO, size: int, verified: asyncio.Future[None]) -> None:
        self.handle = handle
        self.size = size
        self._verified = verified

    @classmethod
    def open(cls, path: Path, size: int, verified: asyncio.Future[None]) -> UploadFollower:
        """Follow ``path`` (``size`` bytes when complete; ``verified`` resolves once its
        digest is checked, or fails with the download). FileNotFoundError when the
        upload is no longer there: committed, or abandoned."""
        # Opened inline: a microsecond's work, and nothing opened in a thread can be lost
        # if the request is cancelled on its way back.
        return cls(path.open("rb"), size, verified)

    def __enter__(self) -> UploadFollower:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.close()

    async def ranges(self) -> AsyncIterator[tuple[int, int]]:
        """(start, count) of the bytes that may go out next, in order, until the whole
        blob has: what is written, all but the last byte until the digest is verified.
        FollowFailed when the download fails first."""
        sent = 0
        while True:
            verified = self._check()
            limit = self.size if verified else self.size - 1
            ready = min(os.fstat(self.handle.fileno()).st_size, limit)
            if ready > sent:
                yield sent, ready - sent
                sent = ready
                continue
            if verified:  # everything is written once the digest is checked
                if sent < self.size:
                    raise FollowFailed("the verified blob is shorter than its size")
                return
            # Waits on the shared future, never cancelling it (a timeout leaves it be).
            await asyncio.wait([self._verified], timeout=FOLLOW_INTERVAL)

    def _check(self) -> bool:
        """Whether the digest is verified; FollowFailed if the download failed."""
        if not self._verified.done():
            return False
        if self._verified.cancelled() or self._verified.exception() is not None:
            raise FollowFailed("fetching the blob from the upstream failed")
        return True
