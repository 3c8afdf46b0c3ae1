"""Moving bytes from one socket to another inside the kernel (``splice`` through a pipe),
driven by the event loop.

Why. A blob streamed from S3 used to cross user space twice in the registry: ``recv``
into a new ``bytes`` (allocated, then copied into by the kernel) and ``send`` out of it
(copied again), with a Python hand-over per 256 KiB piece in between. ``splice`` moves
the received pages into a pipe and from the pipe into the client's socket by reference:
neither copy nor allocation is the registry's, and one wake-up moves up to a pipe's
worth (1 MiB). Go's reference registry copies through a 32 KiB buffer instead.

Both sockets are non-blocking (the event loop's); the pipe is too. The loop waits for
the source to be readable only while the pipe is empty, and for the destination to be
writable only while the pipe holds bytes: what S3 sends meanwhile waits in the source
socket's receive buffer, so memory stays bounded by the kernel's socket buffers and the
pipe, whatever the blob's size. ``SO_RCVLOWAT`` makes each wake-up worth a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios

PIPE_BYTES = 1024 * 1024  # Linux's default /proc/sys/fs/pipe-max-size
# Wake for the source once this much waits (or it closes): fewer, larger moves.
LOW_WATER = 256 * 1024
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
# A client that takes no byte for this long is cut off, as the sendfile path does: it
# would hold an S3 connection, a pipe and its pages for as long as it liked.
STALL_TIMEOUT = 60.0


class SourceEnded(Exception):
    """The source failed, closed or went silent before ``count`` bytes; ``moved`` of
    them reached the destination."""

    def __init__(self, reason: str, moved: int) -> None:
        super().__init__(reason)
        self.moved = moved


class DestinationFailed(Exception):
    """The destination socket failed (the client went away)."""


class Pipe:
    """A non-blocking pipe, as large as the system allows up to ``PIPE_BYTES``."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Over a lowered pipe-max-size the default (64 KiB) works too, with more wake-ups.
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.size = fcntl.fcntl(self.write_fd, fcntl.F_GETPIPE_SZ)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def move(self, source: socket.socket, out: socket.socket, count: int, idle: float) -> int:
        """Move ``count`` bytes from ``source`` to ``out``; ``count``. The pipe is empty
        on return, and on ``SourceEnded`` too (what came before the end is delivered).
        ``idle``: seconds the source may send nothing before it counts as ended."""
        moved = held = 0
        lowat = 0
        src, dst = source.fileno(), out.fileno()
        ended: str | None = None
        while held or (moved < count and ended is None):
            progressed = False
            if ended is None and moved < count and held < self.size:
                try:
                    got = os.splice(
                        src, self.write_fd, min(count - moved, self.size - held), flags=_FLAGS
                    )
                except BlockingIOError:
                    got = -1  # nothing waiting, or the pipe's slots are full
                except OSError as error:
                    ended, got = type(error).__name__, -1
                if got == 0:
                    ended = "the connection closed mid-body"
                elif got > 0:
                    moved += got
                    held += got
                    progressed = True
            if held:
                try:
                    held -= os.splice(self.read_fd, dst, held, flags=_FLAGS)
                    progressed = True
                except BlockingIOError:
                    pass
                except OSError as error:
                    raise DestinationFailed(f"{type(error).__name__}: {error}") from error
            if progressed:
                continue
            if held:  # the client's socket is full: S3's bytes wait in the kernel
                await _drained(dst)
                continue
            want = min(LOW_WATER, count - moved)
            if want != lowat:
                source.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                lowat = want
            if not await _ready(src, writing=False, idle=idle):
                ended = "TimeoutError"
        if ended is not None and moved < count:
            raise SourceEnded(ended, moved)
        return moved


async def _drained(dst: int) -> None:
    """Wait until the client's socket has room. DestinationFailed when the client took
    no byte for STALL_TIMEOUT seconds. Progress is what it acknowledged (``SIOCOUTQ``):
    room is only signalled once a third of the send buffer is free, which a slow but
    steady client may take longer than that to free."""
    unsent = _unsent(dst)
    while not await _ready(dst, writing=True, idle=STALL_TIMEOUT):
        still = _unsent(dst)
        if still >= unsent:
            raise DestinationFailed("the client stopped reading")
        unsent = still


def _unsent(fd: int) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged; 0 where the
    kernel does not say (then a wait that times out counts as no progress)."""
    try:
        (unsent,) = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))
    except OSError:
        return 0
    return int(unsent)


async def _ready(fd: int, *, writing: bool, idle: float | None) -> bool:
    """Wait until ``fd`` is writable (or readable); False when ``idle`` seconds passed
    first."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if writing:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(idle):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        if writing:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
