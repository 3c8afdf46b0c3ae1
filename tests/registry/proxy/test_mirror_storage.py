"""The pull-through cache's storage side of a download (hashing and writing the upload,
in threads) against the clients' side (receiving and sending, on the event loop).

Storage is held up for real: the test takes the exclusive ``flock`` the filesystem
driver's writer takes for every batch it writes to the upload's data file, so the
mirror's writes wait in their thread for as long as the test holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.proxy.fetches import STORE_AHEAD
from tests.registry.conftest import RegistryClient
from tests.registry.helpers import send
from tests.registry.proxy.test_mirror_faults import pushed_blob, read_blob
from tests.support.portside_servers import ServerProcess
from tests.support.upstreams import FaultyProxy

MiB = 1024 * 1024
BLOB = 16 * MiB
PATIENCE = 30.0  # seconds: generous, on a machine shared with other test runs


@contextlib.asynccontextmanager
async def storage_held(registry_environ: dict[str, str]) -> AsyncIterator[tuple[Path, int]]:
    """Hold the lock on the first upload's data file of ``library/big`` as soon as it
    exists: the upload's directory and how many bytes were written before the hold."""
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    uploads = root / "docker/registry/v2/repositories/library/big/_uploads"
    deadline = time.monotonic() + PATIENCE
    while not (found := list(uploads.glob("*/data"))):
        assert time.monotonic() < deadline, "the mirror never started writing the upload"
        await asyncio.sleep(0.005)
    fd = os.open(found[0], os.O_RDWR)
    try:
        # In a thread: the mirror's writer may hold it for the batch it is writing.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield found[0].parent, os.fstat(fd).st_size
    finally:
        os.close(fd)  # and the lock with it


async def test_clients_are_sent_bytes_while_storage_falls_behind(
    mirror: RegistryClient,
    faulty: FaultyProxy,
    open_upstream: ServerProcess,
    registry_environ: dict[str, str],
) -> None:
    digest, _ = await pushed_blob(open_upstream, BLOB, "behind")
    faulty.blob_chunk_delay = 0.001  # at most 64 MB/s: the hold comes after a few MiB
    received = 0
    progress = asyncio.Event()

    async def until_received(count: int) -> None:
        while received < count:
            progress.clear()
            await progress.wait()

    async def pull() -> str:
        nonlocal received
        async with mirror.get(f"/v2/library/big/blobs/{digest}") as response:
            assert response.status == 200
            hasher = hashlib.sha256()
            async for chunk in response.content.iter_any():
                hasher.update(chunk)
                received += len(chunk)
                progress.set()
            return "sha256:" + hasher.hexdigest()

    pulling = asyncio.create_task(pull())
    try:
        async with storage_held(registry_environ) as (_, written):
            # Storage stopped at ``written``: the client still gets STORE_AHEAD more and
            # the batches in storage's hands (it used to stop about two 1 MiB batches
            # past what was written: 2.2 MiB).
            wanted = min(written + STORE_AHEAD, BLOB - 1)
            try:
                await asyncio.wait_for(until_received(wanted), PATIENCE)
            except TimeoutError:
                pytest.fail(f"{received} bytes sent, {written} stored: clients wait for storage")
            assert not pulling.done()  # the last byte waits for storage and the digest
        assert await asyncio.wait_for(pulling, PATIENCE) == digest
    finally:
        pulling.cancel()
        with contextlib.suppress(BaseException):
            await pulling
    faulty.refuse = True  # cached, verified: served with the upstream gone
    assert await read_blob(mirror, digest) == (200, digest)


async def test_a_storage_failure_mid_download_fails_the_client_and_caches_nothing(
    mirror: RegistryClient,
    faulty: FaultyProxy,
    open_upstream: ServerProcess,
    registry_environ: dict[str, str],
) -> None:
    digest, _ = await pushed_blob(open_upstream, BLOB, "storage-fails")
    faulty.blob_chunk_delay = 0.001
    pulling = asyncio.create_task(read_blob(mirror, digest))
    try:
        async with storage_held(registry_environ) as (upload, _):
            # The upload vanishes under the writer: its next batch fails in its thread.
            shutil.rmtree(upload)
        assert await asyncio.wait_for(pulling, PATIENCE) == (200, None)
    finally:
        pulling.cancel()
        with contextlib.suppress(BaseException):
            await pulling
    faulty.refuse = True  # nothing was committed: with the upstream gone, nothing to serve
    head = await send(mirror, "HEAD", f"/v2/library/big/blobs/{digest}")
    assert head.status == 503
    faulty.refuse = False
    faulty.blob_chunk_delay = 0.0
    assert await read_blob(mirror, digest) == (200, digest)
    assert faulty.blob_gets(digest) == 2
