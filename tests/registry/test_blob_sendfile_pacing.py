"""The unsent part of a large body kept small while a worker thread sends it
(``TCP_NOTSENT_LOWAT``, registry/handlers/sendfile.py), over real loopback sockets: set
for a body the threads send, measured as the bytes the kernel holds unsent for a client
that stops reading, and put back once the body is out, so that the next response on the
kept-alive connection (or one sent from the event loop) is queued as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from registry.handlers import sendfile, sendfile_threads
from tests.registry.conftest import RegistryClient
from tests.registry.test_blob_sendfile import DATA, SIZE, push, raw_get
from tests.registry.test_blob_sendfile_threads import WAIT, use_pool

SIOCOUTQNSD = 0x894B  # linux/sockios.h: bytes queued in a TCP socket and not yet sent
# What a blocking sendfile may queue past the mark: the kernel checks it before each new
# segment, which takes up to 64 KiB of pages on loopback.
OVERSHOOT = 64 * 1024


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[sendfile_threads.SendfileThreads]:
    yield from use_pool(monkeypatch, 2)


@contextlib.contextmanager
def server_side(client: socket.socket) -> Iterator[socket.socket]:
    """The server's end of ``client``'s connection: the server runs in this process, so
    it is one of this process's descriptors (a duplicate of it, closed after use)."""
    wanted = client.getsockname()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            candidate = socket.socket(fileno=os.dup(int(name)))
            try:
                if candidate.type == socket.SOCK_STREAM and candidate.getpeername() == wanted:
                    yield candidate
                    return
            finally:
                candidate.close()
    raise AssertionError(f"no server socket connected to {wanted}")


async def pushed(registry: RegistryClient) -> int:
    """Push the test blob; the port to pull it from."""
    await push(registry)
    port = registry.server.port
    assert port is not None
    return port


def lowat(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)


def unsent(sock: socket.socket) -> int:
    (count,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))
    return int(count)


async def test_a_stalled_threaded_body_keeps_little_unsent_and_the_mark_is_put_back(
    registry: RegistryClient, pool: sendfile_threads.SendfileThreads
) -> None:
    # Regression (issue 17): a thread's blocking sendfile filled the socket's whole send
    # buffer (8 MiB) with bytes not yet sent, and each window update of the receiver then
    # sent them from the receiver's own system call: curl, on one core for 16 transfers,
    # spent 0.55-0.66 ms of CPU per MB against 0.21-0.28 with the mark.
    port = await pushed(registry)
    head, body, client = await raw_get(port, receive=256 * 1024, keep_alive=True)
    try:
        assert head.startswith("HTTP/1.1 200"), head
        await asyncio.sleep(0.5)  # the thread now waits for room in a full socket
        assert pool.in_use() == 1
        with server_side(client) as server:
            assert lowat(server) == sendfile.NOTSENT_LOWAT
            held = unsent(server)
            assert held <= sendfile.NOTSENT_LOWAT + OVERSHOOT, held
            received = await read_rest(client, SIZE - len(body))
            assert body + received == DATA
            # put back when the thread's call has returned and the handler goes on
            deadline = time.monotonic() + WAIT
            while lowat(server):
                assert time.monotonic() < deadline, "the mark was left on the connection"
                await asyncio.sleep(0.01)
    finally:
        client.close()


async def test_a_small_body_leaves_the_mark_alone(
    registry: RegistryClient,
    pool: sendfile_threads.SendfileThreads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bodies under THREADED_MIN go out in one call or from the event loop: a low mark
    # would only cut them into more wake-ups. The mark is put back before the handler
    # ends, so what the server asks of the socket is recorded (the server runs in this
    # process), and a large body's request is the control that the record sees it.
    marks: list[int] = []
    original = sendfile._set_notsent_lowat

    def recording(sock: socket.socket, size: int) -> bool:
        marks.append(size)
        return original(sock, size)

    monkeypatch.setattr(sendfile, "_set_notsent_lowat", recording)
    port = await pushed(registry)
    length = sendfile.THREADED_MIN // 2
    head, body, client = await raw_get(
        port, f"Range: bytes=0-{length - 1}\r\n", receive=length, keep_alive=True
    )
    client.close()
    assert head.startswith("HTTP/1.1 206"), head
    assert body == DATA[:length]
    assert marks == []
    head, body, client = await raw_get(port, receive=SIZE)
    client.close()
    assert head.startswith("HTTP/1.1 200"), head
    assert body == DATA
    assert marks[0] == sendfile.NOTSENT_LOWAT
    deadline = time.monotonic() + WAIT  # put back as the handler ends, after the last byte
    while marks[-1] != 0:
        assert time.monotonic() < deadline, marks
        await asyncio.sleep(0.01)


async def read_rest(client: socket.socket, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while len(received) < count:
        piece = await loop.sock_recv(client, 1024 * 1024)
        assert piece, f"the connection closed after {len(received)} of {count} bytes"
        received += piece
    return bytes(received)
