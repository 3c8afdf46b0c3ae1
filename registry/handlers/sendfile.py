"""Sending part of a local file as a response body with the kernel's ``sendfile``, as nginx
does: the headers and the first bytes leave together, each wake-up of the event loop hands
the kernel as much as the socket takes, and the socket's send buffer is as large as the
machine allows, so that a pull costs the server few wake-ups per gigabyte.

asyncio's own ``loop.sendfile`` re-registers the socket with epoll around every chunk
(two ``epoll_ctl`` calls, a new callback and a future each time) and leaves the buffer to
autotuning: on loopback, where a chunk is a few megabytes at most, that event-loop work
was a third of a pull's server CPU (docs/performance.md, "Pulls against nginx"). Here the
first call goes straight to the socket (a small blob needs nothing more). The rest of a
large body is sent by a blocking ``sendfile`` in a worker thread (``sendfile_threads``: no
wake-up of the event loop until the end) while one is free; otherwise one writer callback
stays registered for the whole transfer, on a duplicate of the socket's descriptor
(asyncio refuses a second registration of the transport's own). Either way the
transport's reading is paused and its write buffer is empty, so nothing else writes to the
connection until the body is out, and a client that takes no byte for
``sendfile_threads.STALL_TIMEOUT`` is cut off. Transports that cannot take raw file bytes
(TLS) or loops without ``add_writer`` fall back to ``loop.sendfile``, then a chunked copy.

While a thread sends, the kernel keeps little of the body queued unsent
(``TCP_NOTSENT_LOWAT``): a blocking ``sendfile`` would otherwise fill the whole send
buffer, and every window update of the receiver would then transmit the queued bytes from
the receiver's own system call, on the receiver's CPU. On loopback that made curl, one
thread receiving 16 transfers, the bottleneck at 2.5 times the CPU per MB
(docs/performance.md, "Pulls against nginx").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import termios
from functools import cache
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from registry.handlers import sendfile_threads
from registry.response_headers import prepare

COPY_CHUNK_SIZE = 256 * 1024
MAX_CALL = sendfile_threads.MAX_CALL
# What is left after the first call goes to a worker thread from this size on: below it,
# the thread hop costs more than the event loop's few wake-ups.
THREADED_MIN = 1024 * 1024
SEND_BUFFER = 4 * 1024 * 1024  # asked of SO_SNDBUF; Linux doubles it for its bookkeeping
# Bytes of a body a thread sends that the kernel may hold queued and not yet sent; the
# blocked call adds more as soon as it drains below. 16-64 KiB cut the receiver's CPU per
# MB alike, 128 KiB much less (docs/performance.md).
NOTSENT_LOWAT = 32 * 1024
_PROC_SYS = Path("/proc/sys/net")


async def send_file(
    request: web.Request, response: web.StreamResponse, handle: BinaryIO, start: int, count: int
) -> int:
    """Prepare ``response`` and send ``count`` bytes of the open file from ``start``;
    the number of bytes the kernel took. Raises ConnectionResetError when the peer goes
    away or the file is shorter than ``count``."""
    transport = request.transport
    sock = _raw_socket(transport)
    if sock is None or count == 0:
        await prepare(request, response)
        return await _through_loop(request, response, handle, start, count)
    # Corked, the status line and headers wait in the socket for the first body bytes
    # and leave with them; uncorked once the first call has queued them (each path
    # uncorks as soon as it can; a failure before that uncorks here).
    _set_cork(sock, True)
    try:
        grow_send_buffer(sock)
        await prepare(request, response)
        if transport is None or transport.get_write_buffer_size():
            # The headers did not all fit the socket (they rarely don't): asyncio's own
            # path waits for the transport's buffer to drain before sending the file.
            _set_cork(sock, False)
            return await _through_loop(request, response, handle, start, count)
    except BaseException:
        _set_cork(sock, False)
        raise
    return await _native(transport, sock, handle.fileno(), start, count)


def _raw_socket(transport: asyncio.Transport | None) -> socket.socket | None:
    """The transport's TCP socket when raw file bytes may go straight into it: asyncio's
    plain socket transport (the same test ``loop.sendfile`` makes; TLS transports and
    other loops' transports say otherwise)."""
    if transport is None or transport.is_closing():
        return None
    mode = getattr(transport, "_sendfile_compatible", None)
    if getattr(mode, "name", None) != "TRY_NATIVE":
        return None
    # An IP socket's address is a tuple (a Unix socket's a string): asked of the
    # transport's cached addresses, as ``sock.family`` builds an enum member each time.
    if not isinstance(transport.get_extra_info("sockname"), tuple):
        return None
    return transport.get_extra_info("socket")  # type: ignore[no-any-return]


async def _native(
    transport: asyncio.Transport, sock: socket.socket, fd: int, start: int, count: int
) -> int:
    # The first call goes straight to the socket: it usually takes the whole of a small
    # blob or range, which then costs no epoll registration at all.
    offset, end = start, start + count
    # A body over THREADED_MIN is paced from its first call on: that call then queues
    # only about the mark beyond what is in flight, not as much as the socket's buffer
    # takes, so even a body that would have fit the buffer whole (up to about 8 MiB)
    # usually finishes in a thread, which tops the queue up from its own core
    # (docs/performance.md, "The unsent queue kept short"). Put back before the event
    # loop sends any of it, which the mark would wake every few segments, and once the
    # body is out, for the next response on the connection.
    paced = count > THREADED_MIN and _set_notsent_lowat(sock, NOTSENT_LOWAT)
    try:
        try:
            offset += _send(sock.fileno(), fd, offset, end) or 0
        finally:
            _set_cork(sock, False)  # the headers leave with the first bytes, or now
        if offset >= end:
            return count
        reading = transport.is_reading()
        if reading:
            transport.pause_reading()  # as loop.sendfile does: the connection is ours alone
        try:
            stall = sendfile_threads.STALL_TIMEOUT
            if end - offset >= THREADED_MIN:
                sent = await sendfile_threads.threads().send(sock, fd, offset, end, stall)
                if sent is not None:
                    return offset + sent - start
            if paced:
                paced = not _set_notsent_lowat(sock, 0)
            return offset + await _on_loop(sock, fd, offset, end, stall) - start
        finally:
            if reading and not transport.is_closing():
                transport.resume_reading()
    finally:
        if paced:
            _set_notsent_lowat(sock, 0)


async def _on_loop(sock: socket.socket, fd: int, offset: int, end: int, stall: float) -> int:
    """The rest from ``offset``, sent from the event loop whenever the socket has room:
    one writer callback on a duplicate descriptor for the whole transfer, ended when the
    client takes no byte for ``stall`` seconds (as the threads' ``SO_SNDTIMEO``)."""
    start = offset
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    timer: asyncio.TimerHandle | None = None

    def check_progress(last: int) -> None:
        # Progress is what the client took: the bytes handed to the kernel less those it
        # still holds. The offset alone moves only when a third of the send buffer (up to
        # 8 MiB) has drained, which a slow but steady client may take minutes to do.
        nonlocal timer
        if done.done():
            return
        taken = offset - _unsent(out)
        if taken == last:
            done.set_exception(
                ConnectionResetError("blob transfer stalled: the client stopped reading")
            )
            return
        timer = loop.call_later(stall, check_progress, taken)

    def on_writable() -> None:
        nonlocal offset
        if done.done():
            return
        try:
            offset += _send(out, fd, offset, end) or 0  # None: full again, wait
        except ConnectionResetError as error:
            done.set_exception(error)
            return
        if offset >= end:
            done.set_result(None)

    out = os.dup(sock.fileno())
    timer = loop.call_later(stall, check_progress, offset - _unsent(out))
    try:
        loop.add_writer(out, on_writable)
        try:
            await done
        finally:
            loop.remove_writer(out)
    finally:
        timer.cancel()
        os.close(out)
    return offset - start


def _unsent(out: int) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged
    (``SIOCOUTQ``); 0 where the kernel does not say."""
    try:
        (unsent,) = struct.unpack("i", fcntl.ioctl(out, termios.TIOCOUTQ, b"\0\0\0\0"))
    except OSError:
        return 0
    return int(unsent)


def _send(out: int, fd: int, offset: int, end: int) -> int | None:
    """One ``sendfile`` call from ``offset``: the bytes the socket took, or None when it
    was full. ConnectionResetError when the peer is gone or the file ends early."""
    try:
        sent = os.sendfile(out, fd, offset, min(end - offset, MAX_CALL))
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as error:
        raise ConnectionResetError(f"blob transfer failed: {error}") from error
    if sent == 0:  # the file ended before the descriptor's size: never pad
        raise ConnectionResetError("blob data ended early")
    return sent


async def _through_loop(
    request: web.Request, response: web.StreamResponse, handle: BinaryIO, start: int, count: int
) -> int:
    """asyncio's ``loop.sendfile`` (which copies through TLS), or a chunked copy on a loop
    without it (uvloop's)."""
    transport = request.transport
    if count == 0:
        return 0
    if transport is None:
        raise ConnectionResetError("connection lost")
    try:
        return await asyncio.get_running_loop().sendfile(transport, handle, start, count)
    except NotImplementedError:
        await copy(response, handle, start, count)
        return count


async def copy(response: web.StreamResponse, handle: BinaryIO, start: int, count: int) -> None:
    """Send ``count`` bytes of the open file from ``start`` through the response, in chunks.

    Read inline: local reads of a chunk are brief, and a read in a worker thread could
    outlive a cancelled request and its closed handle.
    """
    handle.seek(start)
    remaining = count
    while remaining > 0:
        chunk = handle.read(min(COPY_CHUNK_SIZE, remaining))
        if not chunk:  # the file is shorter than its descriptor: never pad the response
            raise ConnectionResetError("blob data ended early")
        await response.write(chunk)
        remaining -= len(chunk)


def _set_cork(sock: socket.socket, on: bool) -> None:
    with contextlib.suppress(OSError):  # a reset connection: the send reports it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))


def _set_notsent_lowat(sock: socket.socket, size: int) -> bool:
    """Set ``TCP_NOTSENT_LOWAT`` (0: the system's default, by default no limit); whether
    it was set (not on a reset connection, or a kernel without the option)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, size)
    except OSError:
        return False
    return True


def grow_send_buffer(sock: socket.socket) -> None:
    """Fix the send buffer at ``SEND_BUFFER`` when that is more than autotuning may reach
    (``net.ipv4.tcp_wmem``'s maximum); never shrink it: a fixed size is capped by
    ``net.core.wmem_max``, which on a default Linux is far below autotuning's ceiling.

    Also done to the listening sockets before serving: Linux gives each accepted
    connection the listener's fixed buffer, so a blob's first response on a new
    connection finds it grown and costs one ``getsockopt``, not two calls."""
    size = _fixed_send_buffer()
    if size is None:
        return
    with contextlib.suppress(OSError):
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size // 2)


@cache
def _fixed_send_buffer() -> int | None:
    """The buffer (as the kernel reports it: doubled) a fixed SO_SNDBUF would give, when
    it beats autotuning's maximum; None otherwise, or when the limits cannot be read."""
    try:
        wmem_max = int((_PROC_SYS / "core/wmem_max").read_text())
        autotuned = int((_PROC_SYS / "ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return None
    fixed = 2 * min(SEND_BUFFER, wmem_max)
    return fixed if fixed > autotuned else None
