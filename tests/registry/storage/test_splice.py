"""Moving bytes socket to socket with ``splice`` (registry/storage/driver/splice.py), the
way S3 bodies reach a client over plain HTTP: a client that stops reading is cut off,
a slow but steady one is not."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from registry.storage.driver import splice

MIB = 1024 * 1024
COUNT = 16 * MIB


def _pairs(send_buffer: int = 64 * 1024) -> tuple[socket.socket, ...]:
    """(S3's end, the registry's source end, the registry's client end, the client),
    TCP on loopback: splice's socket side needs real sockets, and SIOCOUTQ TCP."""
    pairs = []
    for _ in range(2):
        with socket.create_server(("127.0.0.1", 0)) as server:
            near = socket.create_connection(server.getsockname())
            far, _ = server.accept()
        pairs.append((near, far))
    (s3, source), (out, client) = pairs
    for sock in (source, out):
        sock.setblocking(False)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return s3, source, out, client


def _feed(s3: socket.socket, count: int) -> None:
    """S3 sends the whole body; it blocks once the registry stops taking."""
    with contextlib.suppress(OSError):  # the registry gave up and closed its end
        s3.sendall(b"x" * count)


async def test_a_client_that_stops_reading_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice, "STALL_TIMEOUT", 0.5)
    s3, source, out, client = _pairs()
    feeder = threading.Thread(target=_feed, args=(s3, COUNT), daemon=True)
    feeder.start()
    try:
        with splice.Pipe() as pipe:
            started = time.monotonic()
            with pytest.raises(splice.DestinationFailed):
                async with asyncio.timeout(30):  # before: waited for as long as it liked
                    await pipe.move(source, out, COUNT, idle=30)
            assert time.monotonic() - started < 20
    finally:
        for sock in (source, out, client, s3):
            sock.close()
        feeder.join(timeout=10)


async def test_a_slow_but_steady_client_is_not_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client takes 8 KiB every 0.1 s: its socket signals room only when a third of
    its 512 KiB send buffer is free, every 2 s, longer than the stall bound; but it
    acknowledges bytes all the time, and that is what counts."""
    monkeypatch.setattr(splice, "STALL_TIMEOUT", 1.0)
    monkeypatch.setattr(splice, "PIPE_BYTES", 64 * 1024)
    count = MIB
    s3, source, out, client = _pairs(send_buffer=256 * 1024)
    received = bytearray()

    def read_slowly() -> None:
        while len(received) < count:
            time.sleep(0.1)
            piece = client.recv(8 * 1024)
            if not piece:
                return
            received.extend(piece)

    feeder = threading.Thread(target=_feed, args=(s3, count), daemon=True)
    reader = threading.Thread(target=read_slowly, daemon=True)
    feeder.start()
    reader.start()
    try:
        with splice.Pipe() as pipe:
            assert await pipe.move(source, out, count, idle=30) == count
        reader.join(timeout=120)
        assert len(received) == count
    finally:
        for sock in (source, out, client, s3):
            sock.close()
        feeder.join(timeout=10)
