"""The bound on request-body bytes the uploads of a process hold together
(``registry/storage/upload_pipe.py``): it holds under many uploads at once, and a client
that stops sending cannot keep the others waiting."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.oci.digest import new_hasher
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.upload_pipe import PIECE_SIZE, BodyBudget, pipe

CHUNK = 64 * 1024
LIMIT = 4 * CHUNK


async def test_the_budget_holds_while_many_uploads_send_at_once(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path, max_threads=4)
    budget = BodyBudget(LIMIT)
    uploads, chunks = 12, 48  # 3 MiB each, 36 MiB in all, through 256 KiB
    highest = 0
    data = [[os.urandom(CHUNK) for _ in range(chunks)] for _ in range(uploads)]

    async def body(pieces: list[bytes]) -> AsyncIterator[bytes]:
        nonlocal highest
        for piece in pieces:
            highest = max(highest, budget.held)
            yield piece
            await asyncio.sleep(0)  # as a socket would, let the others run

    async def upload(index: int) -> str:
        writer = await driver.writer(f"/up/{index}/data")
        hasher = new_hasher("sha256")
        try:
            assert await pipe(body(data[index]), writer, hasher, budget) == CHUNK * chunks
        finally:
            await writer.close()
        return hasher.hexdigest()

    try:
        digests = await asyncio.gather(*(upload(index) for index in range(uploads)))
        for index, digest in enumerate(digests):
            expected = b"".join(data[index])
            assert digest == hashlib.sha256(expected).hexdigest()
            assert (tmp_path / f"up/{index}/data").read_bytes() == expected
    finally:
        await driver.close()
    # Over the limit, no upload takes another chunk: at most one each beyond it.
    assert highest <= LIMIT + uploads * CHUNK
    assert budget.held == 0


async def test_a_client_that_stops_sending_holds_nothing_of_the_budget(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path, max_threads=4)
    budget = BodyBudget(LIMIT)
    resume = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        for _ in range(3):  # just under the limit, then nothing
            yield os.urandom(CHUNK)
        await resume.wait()

    async def steady() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MiB: sixteen times the limit
            yield os.urandom(CHUNK)
            await asyncio.sleep(0)

    async def upload(name: str, body: AsyncIterator[bytes]) -> int:
        writer = await driver.writer(f"/up/{name}/data")
        try:
            return await pipe(body, writer, new_hasher("sha256"), budget)
        finally:
            await writer.close()

    stalled = asyncio.ensure_future(upload("stalled", stalling()))
    try:
        async with asyncio.timeout(60):  # generous: the machine is shared
            sizes = await asyncio.gather(*(upload(f"steady{i}", steady()) for i in range(3)))
        assert sizes == [64 * CHUNK] * 3
        assert budget.held == 0  # the stalled upload's chunks were written meanwhile
    finally:
        resume.set()
        assert await stalled == 3 * CHUNK
        await driver.close()


async def test_a_cancelled_upload_gives_back_everything_it_held(tmp_path: Path) -> None:
    """A client that goes away mid-body cancels the request: the batch being written,
    the one handed to a job not started yet and the chunks kept all go back."""
    driver = FilesystemDriver(tmp_path, max_threads=4)
    budget = BodyBudget(64 * CHUNK)
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(PIECE_SIZE // CHUNK + 3):  # a full batch, and three more chunks
            yield os.urandom(CHUNK)
        sent.set()
        await asyncio.Event().wait()  # then nothing, until the client is gone

    writer = await driver.writer("/up/gone/data")
    upload = asyncio.ensure_future(pipe(body(), writer, new_hasher("sha256"), budget))
    try:
        await asyncio.wait_for(sent.wait(), 30)
        assert budget.held > 0
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        assert budget.held == 0
    finally:
        await writer.close()
        await driver.close()


async def test_waiting_uploads_get_room_in_turn() -> None:
    """Room goes to the uploads in the order they began waiting, one chunk's room to
    one upload (a guard: the budget that woke every waiter at each give did too)."""
    budget = BodyBudget(10)
    budget.take(10)
    admitted: list[int] = []
    woken = 0

    async def upload(index: int) -> None:
        nonlocal woken
        await budget.admit()
        woken += 1
        admitted.append(index)
        budget.take(10)  # its chunk fills the budget again

    uploads = [asyncio.ensure_future(upload(index)) for index in range(50)]
    await asyncio.sleep(0)  # all of them waiting now
    for turn in range(50):
        budget.give(10)
        for _ in range(3):
            await asyncio.sleep(0)
        assert admitted == list(range(turn + 1))
    await asyncio.gather(*uploads)
    assert woken == 50
