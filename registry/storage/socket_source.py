"""What a streamed read may offer besides its pieces: sending its bytes into a socket
itself, kernel-side, without passing them through Python.

A backend reader that is a ``SocketSource`` (the S3 driver's reads over plain HTTP)
moves its bytes from its own connection into the client's with ``splice`` through a
pipe; the serving side asks for that when the client's connection is a plain socket,
and iterates the pieces otherwise. A source serves one way or the other, never both.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SocketSource(Protocol):
    async def send_into(self, out: socket.socket, count: int) -> None:
        """Send the next ``count`` bytes into ``out`` (non-blocking, not closed here).
        Raises ConnectionResetError when the source ends early or ``out`` fails, and
        the driver's errors (``StorageUnavailable``, ``PathNotFound``) as reads do."""
        ...


class PiecesOnFirstUse(AsyncGenerator[bytes, None]):
    """A read that is a ``SocketSource`` and an async generator of its pieces alike: the
    generator of pieces (``_make_pieces``) is made only if the read is iterated, since a
    read sent into a socket never needs one. Closing closes the pieces once made, and
    otherwise whatever ``_close_unstarted`` says."""

    _pieces: AsyncGenerator[bytes, None] | None = None

    def _make_pieces(self) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError

    async def _close_unstarted(self) -> None:
        """What closing a read that was never iterated closes (nothing by default)."""

    def _started(self) -> AsyncGenerator[bytes, None]:
        if self._pieces is None:
            self._pieces = self._make_pieces()
        return self._pieces

    async def asend(self, value: None) -> bytes:
        return await self._started().asend(value)

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> bytes:
        return await self._started().athrow(typ, val, tb)

    async def aclose(self) -> None:
        if self._pieces is not None:
            await self._pieces.aclose()
        else:
            await self._close_unstarted()
