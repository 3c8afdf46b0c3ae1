"""A client that leaves in the middle of a blob streamed from S3: the registry frees the
S3 reader (its read-ahead task or splice, and its S3 connection) at once, not when the garbage
collector finds it.

``get_blob`` used to drop the reader without closing it, leaving it to CPython's
finalizer of abandoned async generators: closed only once the last reference to it
goes. In a ``registry serve`` process configured as deployed (info logging, access log,
metrics), the S3 GET then stayed open for as long as the last test waits (it fails on
the code before the fix). The handler now closes the reader itself before it returns.
The in-process tests (the cyclic collector off) check the same from inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import io
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.handlers import socket_stream
from tests.registry.conftest import ClientFactory
from tests.support.backing_services import S3Server
from tests.support.portside_servers import free_port, registry_process

MIB = 1024 * 1024
WAIT = 20.0  # seconds: a generous bound on a loaded machine; the fix takes milliseconds


def read_ahead_tasks() -> list[asyncio.Task[object]]:
    """The S3 driver's read-ahead tasks alive on this loop (the registry runs on it)."""
    return [
        task
        for task in asyncio.all_tasks()
        if "read_ahead" in getattr(task.get_coro(), "__qualname__", "")
    ]


@contextlib.contextmanager
def no_cyclic_collection() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("mode", ["spliced", "metered", "iterated"])
async def test_a_client_leaving_mid_pull_frees_the_s3_reader_at_once(
    make_registry: ClientFactory,
    s3_server: S3Server,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A plain client socket gets the bytes spliced, with metrics on (their metered
    # driver wraps the reader) or off. A connection without a plain socket (TLS) gets
    # the pieces iterated through aiohttp's writer, read ahead.
    s3_port = urllib.parse.urlsplit(s3_server.url).port
    assert s3_port is not None
    settings = {
        "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:0",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
    }
    if mode == "iterated":
        monkeypatch.setattr(socket_stream, "_plain_socket", lambda transport: None)
    client = await make_registry(settings if mode == "metered" else {})
    data = os.urandom(24 * MIB)  # far more than the read-ahead holds
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    pushed = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, data=io.BytesIO(data)
    )
    assert pushed.status == 201, await pushed.text()
    assert read_ahead_tasks() == []
    host, port = str(client.host), client.port
    with no_cyclic_collection():
        try:
            async with asyncio.timeout(WAIT):
                reader, writer = await asyncio.open_connection(host, port)
                request = f"GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                await reader.readexactly(MIB)  # the pull is under way
                iterated = mode == "iterated"
                assert bool(read_ahead_tasks()) == iterated, "read ahead only when iterated"
                # The registry runs in this process: its GET, and the client's pool's.
                reading = connections_to(os.getpid(), s3_port)
                writer.transport.abort()  # the client leaves
                await writer.wait_closed()
            ahead = read_ahead_tasks()
            if ahead:
                _, still = await asyncio.wait(ahead, timeout=WAIT)
                assert not still, f"the S3 reader is still open {WAIT} s after the client left"
            deadline = asyncio.get_running_loop().time() + WAIT
            while connections_to(os.getpid(), s3_port) >= reading:
                assert asyncio.get_running_loop().time() < deadline, "the S3 GET stayed open"
                await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError("the pull did not start") from None
        finally:
            # Never leave a stuck task to hang the registry's teardown.
            for task in read_ahead_tasks():
                task.cancel()
    # The registry serves the blob whole afterwards.
    again = await client.get(f"/v2/app/blobs/{digest}")
    assert again.status == 200
    assert hashlib.sha256(await again.read()).hexdigest() == digest.split(":")[1]


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` on loopback, from
    /proc: its socket descriptors matched against the kernel's TCP table."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def test_a_registry_process_closes_the_s3_connection_when_the_client_leaves(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """The same in a real ``registry serve`` process, with its logging as deployed:
    there the reader was not finalized for as long as this test waits."""
    registry = registry_process(
        tmp_path,
        # As deployed: info logging, access log, and metrics (their metered driver).
        REGISTRY_LOG_LEVEL="info",
        REGISTRY_HTTP_DEBUG_ADDR=f"127.0.0.1:{free_port()}",
        REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED="true",
        **s3_server.s3_environ(bucket),
    )
    port = registry.port
    s3_port = urllib.parse.urlsplit(s3_server.url).port
    assert s3_port is not None
    data = os.urandom(24 * MIB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.start()
    try:
        assert registry.process is not None
        pid = registry.process.pid
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            path = f"/v2/app/blobs/uploads/?digest={digest}"
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
            writer.write(head.encode() + data)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 201")
            writer.transport.abort()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /v2/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await reader.readexactly(MIB)  # the pull is under way
            reading = connections_to(pid, s3_port)
            assert reading >= 1
            writer.transport.abort()  # the client leaves
            await writer.wait_closed()
        # Never more than a few event-loop turns; 10 s for a loaded machine.
        deadline = asyncio.get_running_loop().time() + 10
        left = reading
        while asyncio.get_running_loop().time() < deadline:
            left = connections_to(pid, s3_port)
            if left < reading:
                break
            await asyncio.sleep(0.1)
        assert left < reading, "the S3 GET stayed open after the client left"
    finally:
        registry.stop()
