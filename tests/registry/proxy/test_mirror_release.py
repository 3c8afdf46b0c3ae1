"""When the clients of a live download get its bytes: each piece as it arrives, and the
last byte once the digest is verified, not after the blob is committed (its flushes,
move and link), which they need not wait for. The bytes they got are the verified ones
whatever the commit does."""

from __future__ import annotations

import asyncio
import time

import pytest

from registry.oci.digest import Digest
from registry.storage.blobs import BlobStore
from registry.storage.driver.base import Content
from tests.registry.conftest import RegistryClient
from tests.registry.proxy.test_mirror_faults import pushed_blob, read_blob
from tests.support.portside_servers import ServerProcess
from tests.support.upstreams import FaultyProxy

WAIT = 20.0  # for a 2 MiB pull over loopback: generous
PAUSE = 4.0  # the slow upstream's pause between pieces: far above a loopback hop


async def test_the_last_bytes_go_out_once_verified_before_the_commit(
    mirror: RegistryClient,
    faulty: FaultyProxy,
    open_upstream: ServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest, _ = await pushed_blob(open_upstream, 2 * 1024 * 1024, "release")
    # The commit's move into the blob store waits until the client has the whole blob.
    committing = asyncio.Event()
    adopt = BlobStore.adopt

    async def held_adopt(
        self: BlobStore, source_path: str, blob: Digest, verified: Content | None = None
    ) -> None:
        await committing.wait()
        await adopt(self, source_path, blob, verified)

    monkeypatch.setattr(BlobStore, "adopt", held_adopt)
    try:
        # Released only after the commit, the last bytes would never come.
        assert await asyncio.wait_for(read_blob(mirror, digest), WAIT) == (200, digest)
    finally:
        committing.set()
    # The commit went on: the blob is cached, served with the upstream refusing.
    faulty.refuse = True
    assert await read_blob(mirror, digest) == (200, digest)
    assert faulty.blob_gets(digest) == 1


async def test_a_live_client_gets_each_piece_as_it_arrives(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, _ = await pushed_blob(open_upstream, 128 * 1024, "piecewise")
    # A slow upstream: its first 64 KiB, a long pause, the rest.
    faulty.blob_chunk_delay = PAUSE
    async with mirror.get(f"/v2/library/big/blobs/{digest}") as response:
        await response.content.readexactly(1)
        first_byte = time.monotonic()
        await response.read()
    pieces = faulty.blob_piece_times
    assert len(pieces) >= 2
    # Holding each piece until the next came, the mirror sent its first byte only once
    # the upstream sent the second piece, PAUSE seconds after the first.
    assert first_byte < pieces[1]
