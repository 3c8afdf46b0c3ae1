"""The mirror's memory while many clients pull one uncached blob, all but the first joining
once bytes already flow: they are sent what is already stored, then follow the download.

The mirror runs in a process of its own so that its peak resident set (Linux's VmHWM)
is its alone. The clients are plain blocking HTTP clients in threads (``recv_into`` and
SHA-256 release the GIL), so that 50 of them verifying 100 MiB each cost the test little.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from tests.registry.proxy.conftest import sha256
from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.upstreams import FaultyProxy, push_blob_data

MiB = 1024 * 1024
BLOB = 100 * MiB
CLIENTS = 50
# The bound for one registry process, whatever the clients do (the mirror alone
# takes about 70 MiB after a cold pull of one client).
PEAK_RSS_LIMIT = 150 * 1000 * 1000
PATIENCE = 180.0  # seconds for every client to finish, on a machine shared with others


@pytest.fixture
def mirror_process(tmp_path: Path, faulty: FaultyProxy) -> Iterator[ServerProcess]:
    """A mirror of the open upstream (through the faulty proxy), in a child process."""
    directory = tmp_path / "mirror"
    directory.mkdir()
    server = filesystem_registry(
        directory, REGISTRY_PROXY_REMOTEURL=faulty.url, REGISTRY_LOG_LEVEL="error"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError("VmHWM")


def pull(port: int, digest: str, flowing: threading.Event | None = None) -> tuple[int, str, float]:
    """GET the blob; its status, the sha256 of every byte received, and when the first
    byte came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
    try:
        connection.request("GET", f"/v2/library/big/blobs/{digest}")
        response = connection.getresponse()
        hasher = hashlib.sha256()
        buffer = bytearray(MiB)
        view = memoryview(buffer)
        first_byte = 0.0
        while received := response.readinto(buffer):
            first_byte = first_byte or time.monotonic()
            hasher.update(view[:received])
            if flowing is not None:
                flowing.set()
        return response.status, "sha256:" + hasher.hexdigest(), first_byte
    finally:
        connection.close()


async def test_late_joiners_of_a_download_keep_the_mirror_within_its_memory_bound(
    mirror_process: ServerProcess, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    data = os.urandom(BLOB)  # a blob alone: gzipping an image's layer takes seconds
    digest = sha256(data)
    async with aiohttp.ClientSession() as session:
        await push_blob_data(session, open_upstream.url, "library/big", digest, data)
    del data
    # A slow upstream (64 KiB, then 1 ms: 100 MiB take seconds), so that the others
    # join while the download still runs.
    faulty.blob_chunk_delay = 0.001
    port = mirror_process.port
    assert mirror_process.process is not None
    pid = mirror_process.process.pid
    loop = asyncio.get_running_loop()
    flowing = threading.Event()
    with ThreadPoolExecutor(CLIENTS) as threads:
        first = loop.run_in_executor(threads, pull, port, digest, flowing)
        assert await asyncio.to_thread(flowing.wait, PATIENCE), "no byte reached the client"
        late = [loop.run_in_executor(threads, pull, port, digest) for _ in range(CLIENTS - 1)]
        # They all came once bytes flowed, and while the download still ran.
        assert not first.done()
        results = await asyncio.wait_for(asyncio.gather(first, *late), PATIENCE)
    assert [result[:2] for result in results] == [(200, digest)] * CLIENTS
    assert faulty.blob_gets(digest) == 1
    # The late ones were sent bytes while the upstream was still sending: they followed
    # the download, not the committed blob.
    assert min(result[2] for result in results[1:]) < faulty.blob_piece_times[-1]
    peak = peak_rss(pid)
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"
