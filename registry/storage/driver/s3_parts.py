"""The bodies of S3 writes: a part buffer reused from part to part, and the request body
that sends its bytes without copying them.

Why. A writer that joined what it received into a new ``bytes`` per part held three
parts at its peak: the part still being uploaded, the buffer just filled, and its
``bytes`` copy; on Python 3.11 aiohttp then joins the request's headers and the whole
body into one more ``bytes`` before writing it (its ``writelines`` is not used before
3.12.9). Here a writer fills a fixed ``bytearray`` (two in all: one filling while the
other is uploaded) and the body hands S3 a view of it, written to the connection in
slices of ``SLICE`` bytes, each sent before the next is taken.

``PartBody`` is a file-like object for botocore (which validates it, reads it to sign
and checksum it, and takes its length from ``len``) and an aiohttp payload for the
connection (aiobotocore passes it on as it is). Its ``write`` never moves the read
position, so a retried request sends the same bytes again.
"""

from __future__ import annotations

import io
import mmap
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

SLICE = 1024 * 1024  # what goes to the connection at once (and aiohttp's join at most)


class PartBuffer:
    """``capacity`` bytes filled by copies of what the writer receives; ``reset`` starts
    the next part in the same memory."""

    def __init__(self, capacity: int, initial: bytes = b"") -> None:
        # Anonymous memory of its own, not the heap's: a page becomes resident only once
        # filled (a small upload costs what it holds, not a part), and all of it goes back
        # to the system with the buffer (large blocks freed on the heap may stay resident).
        self._data = mmap.mmap(-1, capacity)
        self.filled = 0
        if initial:
            self.fill(memoryview(initial))

    @property
    def capacity(self) -> int:
        return len(self._data)

    @property
    def full(self) -> bool:
        return self.filled == len(self._data)

    def fill(self, data: memoryview) -> int:
        """Copy as much of ``data`` as fits; how many bytes were taken."""
        taken = min(len(data), len(self._data) - self.filled)
        self._data[self.filled : self.filled + taken] = data[:taken]
        self.filled += taken
        return taken

    def body(self) -> PartBody:
        """The filled bytes as a request body (a view: do not ``reset`` while it is sent)."""
        return PartBody(memoryview(self._data)[: self.filled])

    def reset(self) -> PartBuffer:
        self.filled = 0
        return self


class PartBody(Payload):
    """A view of a part's bytes: readable and seekable for botocore, written to the
    connection by aiohttp in ``SLICE``-sized pieces without a copy."""

    def __init__(self, view: memoryview, **kwargs: Any) -> None:
        super().__init__(view, content_type="application/octet-stream", **kwargs)
        self._view = view
        self._size = len(view)
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    # --- file-like, for botocore (validation, signing, checksums, length) --------------

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._position + size
        piece = bytes(self._view[self._position : end])
        self._position += len(piece)
        return piece

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    # --- aiohttp payload --------------------------------------------------------------

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._view).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._view if content_length is None else self._view[:content_length]
        for start in range(0, len(view), SLICE):
            # Each slice is handed over and drained before the next: the connection never
            # buffers more than about one slice.
            await writer.write(view[start : start + SLICE])
