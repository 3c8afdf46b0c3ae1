"""The registry's memory while many layers are pushed at once (issue 17), and what keeps
the bound from stopping pushes: a client that stalls mid-body gives its slot back.

The registry runs in a process of its own so that its peak resident set (Linux's VmHWM)
is its alone; the layers are pushed as Docker pushes them (POST, PATCH with the data,
PUT with the digest), all at once, each on a connection of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.procstat import peak_rss_mib
from registry.storage.upload_slots import SLOTS
from tests.support.portside_servers import ServerProcess, filesystem_registry

MiB = 1024 * 1024
# 50 images of 3 layers, as scenario 3 of the bench pushes them: 150 MiB of bodies
# arriving at once, which the registry used to hold all (a peak of 230 MiB).
LAYERS = 150
# The bound for one registry process (about 70 MiB of it is the idle registry).
PEAK_RSS_LIMIT = 150 * 1000 * 1000
PATIENCE = 120.0  # seconds for a push, on a machine shared with others


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ServerProcess]:
    server = filesystem_registry(tmp_path, REGISTRY_LOG_LEVEL="error")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def push_layer(session: aiohttp.ClientSession, base: str, name: str, data: bytes) -> None:
    """POST, PATCH with the data, PUT with the digest: 201, or the test fails."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.post(f"{base}/v2/{name}/blobs/uploads/") as started:
        assert started.status == 202, await started.text()
        location = absolute(base, started.headers["Location"])
    # BytesIO: aiohttp warns (an error here) about big raw bytes; its length is declared.
    async with session.patch(location, data=io.BytesIO(data)) as patched:
        assert patched.status == 202, await patched.text()
        location = absolute(base, patched.headers["Location"])
    async with session.put(location, params={"digest": digest}) as done:
        assert done.status == 201, await done.text()


def absolute(base: str, location: str) -> str:
    return base + location if location.startswith("/") else location


def layers(count: int) -> list[bytes]:
    """``count`` distinct layers of 1 MiB (one random MiB, each with its own head)."""
    base = os.urandom(MiB)
    return [index.to_bytes(8, "big") + base[8:] for index in range(count)]


async def test_layers_pushed_at_once_keep_the_registry_within_its_memory_bound(
    registry: ServerProcess,
) -> None:
    assert registry.process is not None
    pid = registry.process.pid
    data = layers(LAYERS)
    connector = aiohttp.TCPConnector(limit=0)  # a connection for each layer
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    push_layer(session, registry.url, f"memory/image{index % 50}", layer)
                    for index, layer in enumerate(data)
                )
            ),
            PATIENCE,
        )
    peak = peak_rss_mib(pid) * MiB  # since it started: the pushes are all it did
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"


def stalled_patch(port: int, path: str) -> socket.socket:
    """A PATCH that announces 1 MiB, sends 1 KiB of it and then nothing."""
    connection = socket.create_connection(("127.0.0.1", port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {MiB}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    connection.sendall(head.encode() + os.urandom(1024))
    return connection


async def test_clients_that_stall_mid_body_do_not_stop_other_pushes(
    registry: ServerProcess,
) -> None:
    # More stalled bodies than the registry has slots for batches: each holds one for
    # at most its gathering time (a second), then goes on without.
    stalled: list[socket.socket] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(SLOTS + 2):
                async with session.post(f"{registry.url}/v2/memory/stalled/blobs/uploads/") as r:
                    assert r.status == 202, await r.text()
                    location = absolute(registry.url, r.headers["Location"])
                    path = location.removeprefix(registry.url)
                    stalled.append(stalled_patch(registry.port, path))
            await asyncio.sleep(0.5)  # their first bytes are in, their slots taken
            # The stalled ones hold on for a minute (http.bodytimeout), this one must not.
            (layer,) = layers(1)
            await asyncio.wait_for(push_layer(session, registry.url, "memory/other", layer), 30)
    finally:
        for connection in stalled:
            connection.close()
