"""Blobs streamed from S3 (registry/handlers/socket_stream.py): whole, by range, and byte
for byte whether the bytes are spliced into the client's socket (S3 over plain HTTP),
the pieces go straight into it, or, where neither is possible, through aiohttp's
writer."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator
from typing import NoReturn

import pytest
from aiohttp import web

from registry.handlers import socket_stream
from registry.storage.driver import s3
from tests.registry.conftest import ClientFactory, RegistryClient

MIB = 1024 * 1024
DATA = os.urandom(3 * MIB + 12345)  # several pieces and a short last one
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
RANGES = [
    ("bytes=0-0", 0, 1),
    ("bytes=1000-2500000", 1000, 2500001),
    ("bytes=-70000", len(DATA) - 70000, len(DATA)),
    (f"bytes={len(DATA) - 5}-", len(DATA) - 5, len(DATA)),
    (f"bytes={MIB}-{len(DATA) + 99}", MIB, len(DATA)),  # past the end: up to the end
]


async def pushed(make_registry: ClientFactory) -> RegistryClient:
    client = await make_registry()
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": DIGEST}, data=io.BytesIO(DATA)
    )
    assert response.status == 201, await response.text()
    return client


async def check_pulls(client: RegistryClient) -> None:
    whole = await client.get(f"/v2/app/blobs/{DIGEST}")
    assert whole.status == 200
    assert whole.headers["Content-Length"] == str(len(DATA))
    assert await whole.read() == DATA
    for header, start, stop in RANGES:
        part = await client.get(f"/v2/app/blobs/{DIGEST}", headers={"Range": header})
        assert part.status == 206, header
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
        assert await part.read() == DATA[start:stop], header


async def test_pieces_go_straight_into_the_socket(
    make_registry: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not spliced: as for an S3 endpoint over TLS, whose reads go through aiobotocore.
    monkeypatch.setattr(s3, "direct_reads", lambda endpoint: False)
    client = await pushed(make_registry)

    async def no_writer(*args: object) -> NoReturn:
        raise AssertionError("a plain TCP connection went through aiohttp's writer")

    monkeypatch.setattr(socket_stream, "_through_writer", no_writer)
    await check_pulls(client)


async def test_over_plain_http_s3_bytes_are_spliced_into_the_socket(
    make_registry: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 over plain HTTP (the servers here) to a plain client socket: no piece passes
    through Python (registry/storage/driver/splice.py), whole or by range."""
    client = await pushed(make_registry)

    async def no_pieces(*args: object) -> NoReturn:
        raise AssertionError("an S3 read over plain HTTP went through Python in pieces")

    monkeypatch.setattr(socket_stream, "_through_writer", no_pieces)
    monkeypatch.setattr(socket_stream, "_through_socket", no_pieces)
    await check_pulls(client)


async def test_without_a_plain_socket_pieces_go_through_the_writer(
    make_registry: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await pushed(make_registry)
    # As for a TLS connection, whose socket takes no plain bytes.
    monkeypatch.setattr(socket_stream, "_plain_socket", lambda transport: None)
    await check_pulls(client)


async def test_an_empty_blob_is_sent_whole_on_either_path() -> None:
    """No pieces for no bytes is a complete transfer (before, both paths raised "ended
    early" after the headers, and the empty blob's connection was cut)."""

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that yields nothing

    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert await socket_stream._through_socket(ours.fileno(), nothing(), 0) == 0
    await socket_stream._through_writer(web.StreamResponse(), nothing(), 0)


async def test_a_spliced_pull_holds_no_bytes_of_the_blob_in_python(
    make_registry: ClientFactory,
) -> None:
    """Memory flat in the blob's size: the registry (in this process) allocates nothing
    per byte it splices, where the pieces off the socket hold up to the read-ahead's 4 MiB
    (16 pieces of 256 KiB) and each piece's ``bytes``. The client reads into one buffer."""
    client = await make_registry()
    data = os.urandom(32 * MIB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, data=io.BytesIO(data)
    )
    assert response.status == 201, await response.text()
    del data
    loop = asyncio.get_running_loop()
    sock = socket.create_connection((str(client.host), client.port))
    buffer = bytearray(MIB)
    received = 0
    tracemalloc.start()
    try:
        with sock:
            sock.setblocking(False)
            request = f"GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            await loop.sock_sendall(sock, request.encode())
            hasher = hashlib.sha256()
            head = b""
            while b"\r\n\r\n" not in head:
                head += await loop.sock_recv(sock, 1)
            assert head.startswith(b"HTTP/1.1 200"), head
            while count := await loop.sock_recv_into(sock, buffer):
                hasher.update(memoryview(buffer)[:count])
                received += count
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == 32 * MIB
    assert "sha256:" + hasher.hexdigest() == digest
    assert peak < MIB, f"{peak} bytes allocated while 32 MiB were pulled"
