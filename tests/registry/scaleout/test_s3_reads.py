"""The S3 driver's streamed reads (``reader``), which over plain HTTP come straight off
the socket (registry/storage/driver/s3_get.py): offsets, a connection closed mid-body
(resumed where it stopped, from the same object only), error answers and retries."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from registry.storage.driver.base import PathNotFound
from registry.storage.driver.s3 import S3Driver, StorageUnavailable
from registry.storage.driver.s3_get import ObjectBody, ReadBroken, Refused, direct_reads
from registry.storage.socket_source import SocketSource
from tests.registry.scaleout.conftest import FaultyS3
from tests.support.backing_services import S3Server

MIB = 1024 * 1024
CONTENT = os.urandom(3 * MIB + 4321)


@pytest.fixture
async def proxied(
    s3_server: S3Server, bucket: str, faulty_s3: tuple[FaultyS3, str]
) -> AsyncIterator[tuple[S3Driver, FaultyS3]]:
    """A driver reading through the fault-injecting proxy, with CONTENT at /blob (written
    past the proxy, which forwards bodies of up to 1 MiB without a warning)."""
    proxy, url = faulty_s3
    direct = S3Driver(s3_server.driver_config(bucket))
    try:
        await direct.put_content("/blob", CONTENT)
    finally:
        await direct.close()
    driver = S3Driver(s3_server.driver_config(bucket, regionendpoint=url, maxretries=3))
    try:
        yield driver, proxy
    finally:
        await driver.close()


# How a read is taken: its pieces straight off the socket, spliced into a socket
# (registry/storage/driver/splice.py), or its pieces through aiobotocore (TLS endpoints).
MODES = ["off-the-socket", "spliced", "through-aiobotocore"]


async def read_all(
    driver: S3Driver, path: str, offset: int = 0, mode: str = "off-the-socket"
) -> bytes:
    received = bytearray()
    await read_into(received, driver, path, offset, mode)
    return bytes(received)


async def read_into(
    received: bytearray, driver: S3Driver, path: str, offset: int, mode: str
) -> None:
    """What the read gives, into ``received`` as it comes (kept when it fails)."""
    driver._direct = mode != "through-aiobotocore"
    reader = driver.reader(path, offset)
    if mode != "spliced":
        async with contextlib.aclosing(reader):
            async for chunk in reader:
                received += chunk
        return
    assert isinstance(reader, SocketSource)
    count = max(0, len(CONTENT) - offset) if path == "/blob" else 1
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)

        async def drain() -> None:
            while piece := await loop.sock_recv(theirs, 1 << 20):
                received.extend(piece)

        draining = asyncio.create_task(drain())
        try:
            await reader.send_into(ours, count)
        finally:
            ours.shutdown(socket.SHUT_WR)
            await draining


def gets(proxy: FaultyS3) -> int:
    return sum(1 for method, _ in proxy.seen if method == "GET")


def test_reads_go_straight_off_the_socket_only_over_plain_http() -> None:
    assert direct_reads("http://127.0.0.1:9000")
    assert not direct_reads("https://s3.amazonaws.com")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset", [0, 1, MIB - 1, len(CONTENT) - 1, len(CONTENT)])
async def test_a_read_from_an_offset_is_the_rest(
    proxied: tuple[S3Driver, FaultyS3], offset: int, mode: str
) -> None:
    driver, _ = proxied
    assert await read_all(driver, "/blob", offset, mode) == CONTENT[offset:]


async def test_a_read_past_the_end_is_empty_and_a_missing_object_not_found(
    proxied: tuple[S3Driver, FaultyS3],
) -> None:
    driver, _ = proxied
    assert await read_all(driver, "/blob", len(CONTENT) + 10) == b""
    for mode in MODES:
        with pytest.raises(PathNotFound):
            await read_all(driver, "/missing", 0, mode)
    await driver.put_content("/empty", b"")
    assert await read_all(driver, "/empty") == b""


@pytest.mark.parametrize("mode", MODES)
async def test_a_connection_closed_mid_body_is_resumed_where_it_stopped(
    proxied: tuple[S3Driver, FaultyS3], mode: str
) -> None:
    driver, proxy = proxied
    ranges: list[str | None] = []
    cut_at = MIB + 123

    def cut(request: web.Request) -> int | None:
        ranges.append(request.headers.get("Range"))
        return cut_at if len(ranges) == 1 else None

    proxy.cut = cut
    assert await read_all(driver, "/blob", 5, mode) == CONTENT[5:]
    # The second GET asks for the rest only, of the same object.
    assert ranges == ["bytes=5-", f"bytes={5 + cut_at}-"]


@pytest.mark.parametrize("mode", MODES[:2])
async def test_a_server_that_ignores_ranges_is_never_read_from_the_wrong_place(
    proxied: tuple[S3Driver, FaultyS3], mode: str
) -> None:
    """Before, a resumed GET answered with the whole object (200, not 206) was taken as
    the rest: the client got the object's first bytes again, as if they came next."""
    driver, proxy = proxied
    proxy.ranges = False
    gets: list[str | None] = []

    def cut(request: web.Request) -> int | None:
        gets.append(request.headers.get("Range"))
        return MIB if len(gets) == 1 else None

    proxy.cut = cut
    received = bytearray()
    with pytest.raises(StorageUnavailable):
        await read_into(received, driver, "/blob", 0, mode)
    assert bytes(received) == CONTENT[: len(received)]
    with pytest.raises(StorageUnavailable):
        await read_all(driver, "/blob", 5, mode)  # a read from an offset, the same


@pytest.mark.parametrize("mode", MODES)
async def test_a_body_that_keeps_breaking_is_storage_unavailable(
    proxied: tuple[S3Driver, FaultyS3], mode: str
) -> None:
    driver, proxy = proxied
    proxy.cut = lambda request: 1000
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(read_all(driver, "/blob", 0, mode), 60)
    assert gets(proxy) == 4  # one try and three retries, each resuming


@pytest.mark.parametrize("mode", MODES)
async def test_an_object_replaced_mid_read_is_not_resumed(
    s3_server: S3Server, proxied: tuple[S3Driver, FaultyS3], mode: str
) -> None:
    driver, proxy = proxied
    replaced = asyncio.Event()

    async def replace() -> None:
        other = S3Driver(s3_server.driver_config(driver.bucket))
        try:
            await other.put_content("/blob", os.urandom(len(CONTENT)))
        finally:
            await other.close()
        replaced.set()

    tasks: list[asyncio.Task[None]] = []

    def cut(request: web.Request) -> int | None:
        if tasks:
            return None
        tasks.append(asyncio.get_running_loop().create_task(replace()))
        return MIB

    proxy.cut = cut
    proxy.gate = lambda request: replaced if request.headers.get("Range") else None
    received = bytearray()
    with pytest.raises(StorageUnavailable):
        await read_into(received, driver, "/blob", 0, mode)
    # What was read is the old object's, and nothing of the new one was added to it.
    assert received == CONTENT[: len(received)]
    assert len(received) <= MIB


@pytest.mark.parametrize("mode", MODES)
async def test_error_answers_are_retried_then_read(
    proxied: tuple[S3Driver, FaultyS3], mode: str
) -> None:
    driver, proxy = proxied
    failures = iter([503, 500])
    proxy.fault = lambda request: next(failures, None) if request.method == "GET" else None
    assert await read_all(driver, "/blob", 7, mode) == CONTENT[7:]
    assert proxy.failed == 2


@contextlib.asynccontextmanager
async def canned(answer: bytes) -> AsyncIterator[str]:
    """A server on loopback that answers every request with ``answer``, then closes."""

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/bucket/key?sig=1"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        # A short body: what came, then the break (the caller resumes from there).
        (b"HTTP/1.1 206 Partial\r\nContent-Length: 9\r\n\r\nhel", ReadBroken),
        # S3 always gives GetObject a length: a chunked or unmeasured answer is refused.
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 502),
        (b"HTTP/1.1 200 OK\r\n\r\nhello", 502),
        # An error answer's code is read from its body, with or without a length.
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 40\r\n\r\n"
            b"<Error><Code>NoSuchKey</Code></Error>   ",
            (404, "NoSuchKey"),
        ),
        (b"HTTP/1.1 503 Slow Down\r\n\r\n", (503, "")),
        (b"garbage\r\n\r\n", ReadBroken),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 150 + b"\r\n", ReadBroken),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", ReadBroken),  # no end of head
    ],
    ids=["whole", "short", "chunked", "no-length", "404", "503", "garbage", "headers", "cut"],
)
async def test_answers_off_the_socket(answer: bytes, outcome: object) -> None:
    async with canned(answer) as url:
        try:
            body = await ObjectBody.open(url, {})
            received = b""
            async for piece in body.pieces():
                received += piece
        except ReadBroken:
            assert outcome is ReadBroken
        except Refused as refused:
            expected = (outcome, "NoContentLength") if isinstance(outcome, int) else outcome
            assert (refused.status, refused.code) == expected
        else:
            assert received == outcome
