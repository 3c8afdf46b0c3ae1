"""What a streamed read may offer besides its pieces: sending its bytes into a socket
itself, kernel-side, without passing them through Python.

A backend reader that is a ``SocketSource`` (the S3 driver's reads over plain HTTP)
moves its bytes from its own connection into the client's with ``splice`` through a
pipe; the serving side asks for that when the client's connection is a plain socket,
and iterates the pieces otherwise. A source serves one way or the other, never both.
"""

from __future__ import annotations

import socket
from typing import Protocol, runtime_checkable


@runtime_checkable
class SocketSource(Protocol):
    async def send_into(self, out: socket.socket, count: int) -> None:
        """Send the next ``count`` bytes into ``out`` (non-blocking, not closed here).
        Raises ConnectionResetError when the source ends early or ``out`` fails, and
        the driver's errors (``StorageUnavailable``, ``PathNotFound``) as reads do."""
        ...
