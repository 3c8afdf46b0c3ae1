"""The rest of a large blob body sent by one blocking ``sendfile`` loop in a worker thread,
as nginx's ``sendfile`` with ``aio threads``: the kernel waits for room in the socket and
refills it itself, so a transfer costs the event loop no wake-up at all between its start
and its end (the GIL is released for the whole of each call).

The thread works on duplicates of the socket's and the file's descriptors, which it alone
closes: a request cancelled meanwhile cannot close a descriptor under it. The socket is
made blocking (a flag its duplicate shares with the transport's descriptor) only while the
transport's reading is paused and its buffer empty, so nothing else touches it until the
flag is restored. Bounds, since a client chooses how many pulls it opens:

- at most ``THREADS`` transfers per process hold a thread; beyond that the caller sends on
  the event loop instead (``start`` answers None), never queueing behind a slow client;
- a client that stops reading holds its thread at most ``STALL_TIMEOUT`` (``SO_SNDTIMEO``
  bounds each wait of the kernel for room), then the transfer fails;
- a request cancelled mid-transfer (the server stopping) shuts the socket down, which
  ends the thread's blocked call at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

THREADS = 16  # per process: transfers beyond this many at once go through the event loop
STALL_TIMEOUT = 60.0  # seconds a client may take no byte before its transfer is ended
MAX_CALL = 2**30  # the most one sendfile call is asked for (the kernel caps near 2 GiB)


class SendfileThreads:
    """A bounded set of worker threads for blocking ``sendfile`` transfers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._busy = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max(size, 1), thread_name_prefix="sendfile")

    def in_use(self) -> int:
        """How many threads hold a transfer now (a thread is freed when its call ends,
        not when the request that started it is cancelled)."""
        return self._busy

    def close(self) -> None:
        """Let the idle threads end (each transfer still running ends first)."""
        self._executor.shutdown(wait=True)

    def _take(self) -> bool:
        with self._lock:
            if self._busy >= self.size:
                return False
            self._busy += 1
            return True

    def _give(self) -> None:
        with self._lock:
            self._busy -= 1

    async def send(
        self, sock: socket.socket, fd: int, offset: int, end: int, stall: float
    ) -> int | None:
        """Send bytes ``offset``..``end`` of file ``fd`` into ``sock`` from a worker thread;
        the number sent, or None when every thread is taken. ConnectionResetError when the
        peer goes away, stops reading for ``stall`` seconds, or the file ends early."""
        if not self._take():
            return None
        blocking: _Blocking | None = None
        transfer: _Transfer | None = None
        try:
            transfer = _Transfer.of(sock.fileno(), fd)
            blocking = _Blocking(sock, stall)
            future = self._executor.submit(self._run, transfer, offset, end)
        except (OSError, RuntimeError) as error:  # a reset socket; an exiting interpreter
            if transfer is not None:
                transfer.close()
            if blocking is not None:
                blocking.restore()
            self._give()
            if isinstance(error, OSError):
                raise ConnectionResetError(f"blob transfer failed: {error}") from error
            return None
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():  # never started: no thread will clean up after it
                transfer.close()
                self._give()
            else:
                transfer.abort()  # the thread's blocked call returns at once; it cleans up
            raise
        finally:
            blocking.restore()

    def _run(self, transfer: _Transfer, offset: int, end: int) -> int:
        try:
            return transfer.run(offset, end)
        finally:
            transfer.close()
            self._give()


class _Transfer:
    """The thread's own duplicates of the socket and the file, closed under a lock so
    that an abort from the event loop never shuts down a reused descriptor number."""

    def __init__(self, out: int, fd: int) -> None:
        self.out, self.fd = out, fd
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def of(cls, sock: int, fd: int) -> _Transfer:
        """Duplicates of both descriptors (none left open if the second fails)."""
        out = os.dup(sock)
        try:
            return cls(out, os.dup(fd))
        except OSError:
            os.close(out)
            raise

    def run(self, offset: int, end: int) -> int:
        start = offset
        while offset < end:
            try:
                sent = os.sendfile(self.out, self.fd, offset, min(end - offset, MAX_CALL))
            except BlockingIOError:  # SO_SNDTIMEO passed without room for a byte
                raise ConnectionResetError(
                    "blob transfer stalled: the client stopped reading"
                ) from None
            except InterruptedError:
                continue
            except OSError as error:
                raise ConnectionResetError(f"blob transfer failed: {error}") from error
            if sent == 0:  # the file ended before the descriptor's size: never pad
                raise ConnectionResetError("blob data ended early")
            offset += sent
        return offset - start

    def abort(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    _shutdown(self.out)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self.out)
            os.close(self.fd)


def _shutdown(fd: int) -> None:
    duplicate = socket.socket(fileno=os.dup(fd))
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    finally:
        duplicate.close()


class _Blocking:
    """The socket blocking, with ``SO_SNDTIMEO`` at ``stall``, until ``restore``."""

    def __init__(self, sock: socket.socket, stall: float) -> None:
        self._sock = sock
        seconds = int(stall)
        sock.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_SNDTIMEO,
            struct.pack("ll", seconds, int((stall - seconds) * 1_000_000)),
        )
        os.set_blocking(sock.fileno(), True)

    def restore(self) -> None:
        if self._sock.fileno() < 0:  # the transport closed it meanwhile
            return
        with contextlib.suppress(OSError):
            os.set_blocking(self._sock.fileno(), False)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))


_pool: SendfileThreads | None = None
_pool_lock = threading.Lock()


def threads() -> SendfileThreads:
    """This process's transfer threads, made on first use (threads start as needed)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = SendfileThreads(THREADS)
        return _pool
