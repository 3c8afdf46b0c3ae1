"""When the clients of a live download get its bytes: each piece as it arrives, and the
last byte once the digest is verified, not after the blob is committed (its flushes,
move and link), which they need not wait for. The bytes they got are the verified ones
whatever the commit does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.steps import Move, Step
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
    # The commit (its move into the blob store, in one run of steps with the link and
    # the upload's removal) waits until the client has the whole blob.
    committing = asyncio.Event()
    run_steps = FilesystemDriver.run_steps
    held: list[Sequence[Step]] = []

    async def held_commit(self: FilesystemDriver, steps: Sequence[Step]) -> None:
        if any(isinstance(step, Move) for step in steps):
            held.append(steps)
            await committing.wait()
        await run_steps(self, steps)

    monkeypatch.setattr(FilesystemDriver, "run_steps", held_commit)
    try:
        # Released only after the commit, the last bytes would never come.
        assert await asyncio.wait_for(read_blob(mirror, digest), WAIT) == (200, digest)
    finally:
        committing.set()
    assert held, "the commit was not held: the test would prove nothing"
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
