"""A client that leaves in the middle of a blob streamed from S3: the registry frees the
S3 reader (its read-ahead task and S3 connection) at once, not when the garbage
collector finds it.

``get_blob`` used to drop the reader without closing it, leaving it to CPython's
finalizer of abandoned async generators: it is closed once the last reference to it
goes, which anything holding the failed transfer's traceback (a log record queued for
another thread, an error reporter) puts off. It is now closed by the handler itself
before it returns. The cyclic collector is off here, so a reader kept alive by a
reference cycle would show as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import io
import os
from collections.abc import Iterator

import pytest

from tests.registry.conftest import ClientFactory

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


@pytest.mark.parametrize("metrics", [False, True], ids=["plain", "metered"])
async def test_a_client_leaving_mid_pull_frees_the_s3_reader_at_once(
    make_registry: ClientFactory, metrics: bool
) -> None:
    # Metrics wrap the driver's reader in one of their own (registry.storage.driver.metered).
    settings = {
        "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:0",
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
    }
    client = await make_registry(settings if metrics else {})
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
                assert read_ahead_tasks(), "the blob is not read from S3 with read-ahead"
                writer.transport.abort()  # the client leaves
                await writer.wait_closed()
            reading = read_ahead_tasks()
            if reading:
                _, still = await asyncio.wait(reading, timeout=WAIT)
                assert not still, f"the S3 reader is still open {WAIT} s after the client left"
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
