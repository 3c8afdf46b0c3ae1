"""Large blob bodies sent from worker threads (registry/handlers/sendfile_threads.py),
over real loopback sockets: exact bytes for whole blobs and ranges, more pulls at once
than there are threads (the rest go through the event loop), a client that stops reading
cut off after the stall timeout on either path, a client that leaves, and a server that
stops mid-transfer without waiting for the stall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.handlers import sendfile, sendfile_threads
from tests.registry.conftest import RegistryClient
from tests.registry.test_blob_sendfile import DATA, PATH, SIZE, counting, push, raw_get
from tests.support.portside_servers import filesystem_registry

WAIT = 60.0  # generous: the machine is shared; a correct server takes a second or two


def use_pool(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> Iterator[sendfile_threads.SendfileThreads]:
    pool = sendfile_threads.SendfileThreads(size)
    monkeypatch.setattr(sendfile_threads, "_pool", pool)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[sendfile_threads.SendfileThreads]:
    """The process's transfer threads: four, fresh for the test."""
    yield from use_pool(monkeypatch, 4)


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[sendfile_threads.SendfileThreads]:
    yield from use_pool(monkeypatch, 2)


@pytest.fixture(params=[4, 0], ids=["thread", "event-loop"])
def either_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[sendfile_threads.SendfileThreads]:
    """Four threads, or none: every transfer goes through the event loop."""
    yield from use_pool(monkeypatch, request.param)


async def wait_until_idle(pool: sendfile_threads.SendfileThreads, within: float) -> float:
    """Seconds until no thread holds a transfer; fails after ``within``."""
    started = time.monotonic()
    while pool.in_use():
        assert time.monotonic() - started < within, "a transfer thread is still held"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_large_body_goes_out_from_one_thread_call_without_any_registration(
    registry: RegistryClient,
    pool: sendfile_threads.SendfileThreads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await push(registry)
    port = registry.server.port
    assert port is not None
    registrations = counting(monkeypatch, asyncio.get_running_loop(), "add_writer")
    sends = counting(monkeypatch, os, "sendfile")
    head, body, _ = await raw_get(port)
    assert head.startswith("HTTP/1.1 200"), head
    assert body == DATA
    assert registrations == [], "the event loop was woken for the body"
    # the first call on the loop, then the thread's: the kernel waits for room itself
    assert len(sends) <= 3, len(sends)
    await wait_until_idle(pool, WAIT)


async def test_ranges_from_threads_are_exact(
    registry: RegistryClient, pool: sendfile_threads.SendfileThreads
) -> None:
    await push(registry)
    port = registry.server.port
    assert port is not None
    for start, end in ((0, SIZE - 1), (5, 20_000_004), (SIZE - 3_000_000, SIZE - 1)):
        head, body, _ = await raw_get(port, f"Range: bytes={start}-{end}\r\n")
        assert head.startswith("HTTP/1.1 206"), head
        assert body == DATA[start : end + 1], (start, end, len(body))


async def test_more_pulls_than_threads_all_complete_exactly(
    registry: RegistryClient,
    two_threads: sendfile_threads.SendfileThreads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two threads, eight slow readers at once: two bodies go from threads, the others
    # through the event loop; every byte of each is right and no pull waits for a thread.
    await push(registry)
    port = registry.server.port
    assert port is not None
    on_loop = counting(monkeypatch, sendfile, "_on_loop")
    taken: list[tuple[bool, int]] = []
    take = two_threads._take

    def spy() -> bool:
        got = take()
        taken.append((got, two_threads.in_use()))
        return got

    monkeypatch.setattr(two_threads, "_take", spy)
    ranges = [(index * 1_000_000, SIZE - 1 - index) for index in range(8)]
    answers = await asyncio.gather(
        *(raw_get(port, f"Range: bytes={start}-{end}\r\n") for start, end in ranges)
    )
    for (start, end), (head, body, _) in zip(ranges, answers, strict=True):
        assert head.startswith("HTTP/1.1 206"), head
        assert body == DATA[start : end + 1], (start, end, len(body))
    assert max(busy for _, busy in taken) == 2, taken
    assert len(on_loop) == [got for got, _ in taken].count(False) >= 1, (taken, len(on_loop))
    await wait_until_idle(two_threads, WAIT)


async def test_a_client_that_stops_reading_is_cut_off_after_the_stall_timeout(
    registry: RegistryClient,
    either_path: sendfile_threads.SendfileThreads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regression: a client that stopped reading held its transfer (and now would hold a
    # thread) for as long as it kept the connection open.
    monkeypatch.setattr(sendfile_threads, "STALL_TIMEOUT", 1.0)
    await push(registry)
    port = registry.server.port
    assert port is not None
    head, body, sock = await raw_get(port, receive=1024 * 1024)
    assert head.startswith("HTTP/1.1 200") and body == DATA[: len(body)]
    with sock:
        # The event loop's progress check runs every timeout: the first may still see
        # the bytes read before the stall, the second ends the transfer. This test
        # shares the server's loop, so its own wake-up comes after both.
        await asyncio.sleep(3 * sendfile_threads.STALL_TIMEOUT)
        await wait_until_idle(either_path, WAIT)
        loop = asyncio.get_running_loop()
        received = len(body)
        async with asyncio.timeout(WAIT):  # what the sockets hold, then the end
            while piece := await loop.sock_recv(sock, 1024 * 1024):
                received += len(piece)
    assert received < SIZE, "the stalled transfer was never ended"


async def test_a_slow_but_steady_client_is_not_cut_off_on_the_event_loop(
    tmp_path: Path,
) -> None:
    """On the event loop's path the offset moves only when the socket is writable again,
    after much of a large send buffer has drained: a client reading about 20 kB/s took
    no new offset for longer than the stall timeout and was cut off although it never
    stopped reading (review finding). What the peer took is what counts."""
    stall = 2.0
    data = os.urandom(8 * 1024 * 1024)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        with client:
            await loop.sock_connect(client, listener.getsockname())
            server, _ = await loop.sock_accept(listener)
            with server, blob.open("rb") as handle:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                server.setblocking(False)
                sending = asyncio.create_task(
                    sendfile._on_loop(server, handle.fileno(), 0, len(data), stall)
                )
                received = bytearray()
                reading_until = time.monotonic() + 4 * stall
                while time.monotonic() < reading_until and not sending.done():
                    await asyncio.sleep(0.05)
                    with contextlib.suppress(BlockingIOError):
                        received += client.recv(1024)
                assert not sending.done(), sending.exception()
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
    assert received and bytes(received) == data[: len(received)]


async def test_a_client_that_leaves_mid_pull_frees_its_thread(
    registry: RegistryClient, pool: sendfile_threads.SendfileThreads
) -> None:
    await push(registry)
    port = registry.server.port
    assert port is not None
    head, body, sock = await raw_get(port, receive=1024 * 1024)
    assert head.startswith("HTTP/1.1 200") and body == DATA[: len(body)]
    assert pool.in_use() == 1
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: the thread's blocked call fails at once
    waited = await wait_until_idle(pool, WAIT)
    assert waited < sendfile_threads.STALL_TIMEOUT / 2, "freed by the stall timeout only"
    whole = await registry.get(PATH)
    assert whole.status == 200 and await whole.read() == DATA


def test_a_stopping_server_does_not_wait_for_a_stalled_transfer(tmp_path: Path) -> None:
    # The request is cancelled when the server stops; its thread, blocked in sendfile for
    # a client that reads nothing, must end then, not after the 60 s stall timeout.
    registry = filesystem_registry(tmp_path, REGISTRY_HTTP_DRAINTIMEOUT="1s")
    registry.start()
    try:
        with socket.create_connection(("127.0.0.1", registry.port)) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            post = (
                f"POST /v2/app/blobs/uploads/?digest={PATH.rsplit('/', 1)[1]} HTTP/1.1\r\n"
                f"Host: registry\r\nContent-Length: {SIZE}\r\n\r\n"
            )
            client.sendall(post.encode() + DATA)
            assert client.recv(65536).startswith(b"HTTP/1.1 201"), "push failed"
            client.sendall(f"GET {PATH} HTTP/1.1\r\nHost: registry\r\n\r\n".encode())
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(1.0)  # the rest now waits in a thread for room in the socket
            started = time.monotonic()
            assert registry.stop(timeout=WAIT) == 0, registry.log()
            assert time.monotonic() - started < sendfile_threads.STALL_TIMEOUT / 2
    finally:
        registry.kill()


async def test_a_transfer_cancelled_before_its_thread_starts_gives_everything_back(
    tmp_path: Path,
) -> None:
    """A request cancelled while its job still waits for a thread (the pool's thread is
    between jobs, or starting): the job never runs, so the caller closes the duplicate
    descriptors and frees the slot; else after as many such cancels as threads, no
    transfer would ever use a thread again."""
    pool = sendfile_threads.SendfileThreads(1)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    blocker = pool._executor.submit(
        lambda: asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
    )
    data = tmp_path / "blob"
    data.write_bytes(os.urandom(4 * 1024 * 1024))
    here, there = socket.socketpair()
    try:
        with data.open("rb") as handle:
            descriptors = len(os.listdir("/proc/self/fd"))
            transfer = asyncio.create_task(
                pool.send(here, handle.fileno(), 0, 4 * 1024 * 1024, WAIT)
            )
            for _ in range(100):  # until its job is queued behind the blocker
                await asyncio.sleep(0.01)
                if pool.in_use() == 1 and pool._executor._work_queue.qsize() == 1:
                    break
            transfer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await transfer
            assert pool.in_use() == 0
            assert len(os.listdir("/proc/self/fd")) == descriptors
    finally:
        release.set()
        await asyncio.wrap_future(blocker)
        here.close()
        there.close()
        pool.close()
