"""Blob bodies sent with the kernel's sendfile (registry/handlers/sendfile.py), over real
loopback sockets: one epoll registration per transfer however many wake-ups it takes,
exact bytes for whole blobs and ranges with a reader that keeps the socket full, nothing
left behind by a client that leaves mid-pull, TLS never bypassed, and a send buffer that
is only ever grown.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from registry.app import create_app
from registry.config import load_config
from registry.handlers import sendfile, sendfile_threads
from tests.deploy.pki import Pki
from tests.registry.conftest import ClientFactory, RegistryClient

SIZE = 32 * 1024 * 1024  # several wake-ups' worth against a small receive window
DATA = os.urandom(SIZE)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
PATH = f"/v2/app/blobs/{DIGEST}"


async def push(registry: RegistryClient) -> None:
    pushed = await registry.post(
        "/v2/app/blobs/uploads/", params={"digest": DIGEST}, data=io.BytesIO(DATA)
    )
    assert pushed.status == 201, await pushed.text()


async def raw_get(
    port: int, headers: str = "", *, receive: int | None = None, keep_alive: bool = False
) -> tuple[str, bytes, socket.socket]:
    """GET ``PATH`` on a socket with a 64 KiB receive buffer, read in 64 KiB pieces (the
    server meets a full socket again and again); the head, the first ``receive`` bytes
    of the body (all of it when None), and the socket, left open when cut short (the
    connection kept open after the response with ``keep_alive``)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    connection = "keep-alive" if keep_alive else "close"
    request = f"GET {PATH} HTTP/1.1\r\nHost: registry\r\nConnection: {connection}\r\n{headers}\r\n"
    await loop.sock_sendall(sock, request.encode())
    received = bytearray()
    while b"\r\n\r\n" not in received:
        piece = await loop.sock_recv(sock, 64 * 1024)
        assert piece, bytes(received)
        received += piece
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    wanted = receive if receive is not None else SIZE + 1
    received = bytearray(body)
    while len(received) < wanted:
        piece = await loop.sock_recv(sock, 64 * 1024)
        if not piece:
            break
        received += piece
    if receive is None:
        sock.close()
    return head.decode(), bytes(received), sock


def counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Record each call of ``owner.name`` (still calling it) in the returned list."""
    calls: list[object] = []
    real: Callable[..., Any] = getattr(owner, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


async def test_a_pull_registers_its_socket_once_however_many_wakeups(
    registry: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: asyncio's loop.sendfile added and removed the socket's epoll
    # registration around every chunk (two epoll_ctl calls and a callback each), which
    # cost a pull a third of its server CPU against nginx. No thread is free here, so the
    # body goes through the event loop, as beyond the thread limit.
    monkeypatch.setattr(sendfile_threads, "_pool", sendfile_threads.SendfileThreads(0))
    await push(registry)
    port = registry.server.port
    assert port is not None
    sends = counting(monkeypatch, os, "sendfile")
    registrations = counting(monkeypatch, asyncio.get_running_loop(), "add_writer")

    head, body, _ = await raw_get(port)

    assert head.startswith("HTTP/1.1 200"), head
    assert body == DATA
    assert len(sends) >= 3, "the transfer must span several wake-ups to show anything"
    assert len(registrations) == 1, (len(registrations), len(sends))


async def test_a_small_blob_goes_out_without_any_registration(
    registry: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = os.urandom(100 * 1024)
    digest = "sha256:" + hashlib.sha256(small).hexdigest()
    pushed = await registry.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, data=io.BytesIO(small)
    )
    assert pushed.status == 201
    registrations = counting(monkeypatch, asyncio.get_running_loop(), "add_writer")
    response = await registry.get(f"/v2/app/blobs/{digest}")
    assert response.status == 200 and await response.read() == small
    assert registrations == []


async def test_a_blob_shorter_on_disk_than_its_size_ends_the_connection(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    # Regression: loop.sendfile returned early at the file's end without an error, the
    # response was then ended as if complete, and a keep-alive client waited forever for
    # the bytes its Content-Length promised. The cached descriptor keeps the old size.
    registry = await make_registry({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "inmemory"})
    await push(registry)
    port = registry.server.port
    assert port is not None
    cached = await registry.get(PATH)  # the size is now in the cache
    assert cached.status == 200 and len(await cached.read()) == SIZE
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    [data] = root.glob(f"docker/registry/v2/blobs/sha256/*/{DIGEST.split(':')[1]}/data")
    os.truncate(data, SIZE // 2)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    with sock:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, f"GET {PATH} HTTP/1.1\r\nHost: registry\r\n\r\n".encode())
        received = 0
        async with asyncio.timeout(60):  # generous: the end must come, not time out
            while piece := await loop.sock_recv(sock, 1024 * 1024):
                received += len(piece)
    assert received < SIZE // 2 + 4096, "more than the file holds, or padded"


async def test_ranges_are_sent_from_their_offsets(registry: RegistryClient) -> None:
    await push(registry)
    port = registry.server.port
    assert port is not None
    for start, end in ((0, 0), (SIZE - 1, SIZE - 1), (20_000_000, 31_000_000), (7, SIZE - 1)):
        head, body, _ = await raw_get(port, f"Range: bytes={start}-{end}\r\n")
        assert head.startswith("HTTP/1.1 206"), head
        assert f"Content-Range: bytes {start}-{end}/{SIZE}" in head, head
        assert body == DATA[start : end + 1], (start, end, len(body))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_client_that_leaves_mid_pull_leaves_nothing_behind(
    registry: RegistryClient,
) -> None:
    await push(registry)
    port = registry.server.port
    assert port is not None
    before = open_descriptors()
    head, body, sock = await raw_get(port, receive=1024 * 1024)
    assert head.startswith("HTTP/1.1 200") and body == DATA[: len(body)]
    # Reset, not a polite close: the server's next send fails at once.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    for _ in range(200):  # the server notices on its next wake-up; generous for a busy CI
        if open_descriptors() <= before:
            break
        await asyncio.sleep(0.05)
    assert open_descriptors() <= before, "the duplicate descriptor or the file leaked"
    whole = await registry.get(PATH)
    assert whole.status == 200 and await whole.read() == DATA


async def test_blobs_over_tls_go_through_tls(tmp_path: Path) -> None:
    # Raw file bytes must never go into a TLS connection's socket: such transports take
    # asyncio's copying path.
    pki = Pki.create()
    certificate, key = pki.write_bundle(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate, key)
    client_context = ssl.create_default_context(cafile=pki.write_root(tmp_path / "root.crt"))
    environ = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data")}
    server = TestServer(create_app(load_config(None, environ)))
    await server.start_server(ssl=server_context)
    try:
        async with aiohttp.ClientSession(base_url=server.make_url("/")) as session:
            async with session.post(
                "/v2/app/blobs/uploads/",
                params={"digest": DIGEST},
                data=io.BytesIO(DATA),
                ssl=client_context,
            ) as pushed:
                assert pushed.status == 201, await pushed.text()
            async with session.get(PATH, ssl=client_context) as whole:
                assert whole.status == 200 and await whole.read() == DATA
            headers = {"Range": "bytes=1000-2000000"}
            async with session.get(PATH, headers=headers, ssl=client_context) as part:
                assert part.status == 206 and await part.read() == DATA[1000:2000001]
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("wmem_max", "tcp_wmem", "expected"),
    [
        # Debian's defaults: a fixed buffer would be capped far below autotuning's 4 MiB.
        ("212992", "4096 16384 4194304", None),
        ("4194304", "4096 16384 4194304", 8 * 1024 * 1024),
        ("67108864", "4096 16384 4194304", 8 * 1024 * 1024),
        ("67108864", "4096 16384 16777216", None),
        (None, None, None),  # no /proc: leave the socket alone
    ],
)
def test_the_send_buffer_is_only_ever_grown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wmem_max: str | None,
    tcp_wmem: str | None,
    expected: int | None,
) -> None:
    if wmem_max is not None and tcp_wmem is not None:
        (tmp_path / "core").mkdir()
        (tmp_path / "ipv4").mkdir()
        (tmp_path / "core/wmem_max").write_text(wmem_max + "\n")
        (tmp_path / "ipv4/tcp_wmem").write_text(tcp_wmem + "\n")
    monkeypatch.setattr(sendfile, "_PROC_SYS", tmp_path)
    sendfile._fixed_send_buffer.cache_clear()
    try:
        assert sendfile._fixed_send_buffer() == expected
    finally:
        sendfile._fixed_send_buffer.cache_clear()


async def test_each_response_lifts_its_cork_exactly_once(
    registry: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status line and headers wait corked for the first body bytes, and one lift of
    # the cork lets them go. It used to be lifted a second time on every blob GET: a
    # wasted system call per request, where a Range request already costs 4 to 10 times
    # nginx's.
    await push(registry)
    corks: list[bool] = []
    real = sendfile._set_cork

    def spy(sock: socket.socket, on: bool) -> None:
        corks.append(on)
        real(sock, on)

    monkeypatch.setattr(sendfile, "_set_cork", spy)
    # The whole blob (its rest from a thread), a small range the first call takes whole,
    # and a large one.
    for start, end in ((0, SIZE - 1), (1000, 1999), (7, 16 * 1024 * 1024)):
        corks.clear()
        headers = {} if end == SIZE - 1 else {"Range": f"bytes={start}-{end}"}
        response = await registry.get(PATH, headers=headers)
        assert await response.read() == DATA[start : end + 1]
        assert response.status == (206 if headers else 200)
        assert corks == [True, False], (start, end, corks)
