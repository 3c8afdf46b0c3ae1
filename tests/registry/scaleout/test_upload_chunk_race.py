"""Over S3, two different chunks of the same length raced at the same offset of one upload
on two instances: the last data write wins, and the last hash state saved may be the other
body's. However the race ends, a third instance must never answer 201 to a digest the
stored bytes do not hash to: a state computed over another version of the data is not
used (the data is re-read), so the finish answers 201 only for the bytes that won.

Each racer reaches S3 through a proxy that delays some of its requests, so that the race
ends the worst way every time: ``ours`` is written first and ``theirs`` over it, while
the hash state of ``ours`` is saved last. Both ways the S3 driver appends are raced: a
small object read back and written whole, and a large one copied within S3 as the first
part of a multipart upload."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import Callable

import pytest
from aiohttp import web

from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.scaleout.conftest import s3_proxy
from tests.registry.scaleout.test_upload_state import NAME, patch, start
from tests.support.backing_services import S3Server

MIB = 1024 * 1024
LATE = 0.6  # seconds: generous, the machine is shared


def is_state(request: web.Request) -> bool:
    return request.method == "PUT" and "/hashstates/" in request.path


def first_data_write() -> Callable[[web.Request], bool]:
    """True for the first request that writes the upload's data (a PUT, or the creation
    of a multipart upload), so that the whole write ends about ``LATE`` later."""
    seen: list[web.Request] = []

    def check(request: web.Request) -> bool:
        if request.method in ("PUT", "POST") and request.path.endswith("/data") and not seen:
            seen.append(request)
            return True
        return False

    return check


async def race_patch(client: RegistryClient, location: str, chunk: bytes, at: int) -> int:
    """PATCH ``chunk`` at ``at``; its status (a racer may lose with an error, never a 500)."""
    response = await client.patch(
        location,
        data=io.BytesIO(chunk),
        headers={
            "Content-Range": f"{at}-{at + len(chunk) - 1}",
            "Content-Type": "application/octet-stream",
        },
    )
    await response.read()
    return response.status


# A first chunk, so that the racers resume a stored state (at a partial hash block): past
# 1 MiB, below which a chunk of declared length stores none; the whole object stays under
# S3's 5 MiB part minimum, or does not.
@pytest.mark.parametrize("prefix_size", [MIB + 3001, 5 * MIB + 3001], ids=["small", "copied"])
async def test_a_race_at_one_offset_never_stores_a_blob_under_a_wrong_digest(
    make_registry: ClientFactory, s3_server: S3Server, prefix_size: int
) -> None:
    async with (
        s3_proxy(s3_server) as (ours_s3, ours_url),
        s3_proxy(s3_server) as (theirs_s3, theirs_url),
    ):
        delayed_states: list[str] = []

        def delay_states(request: web.Request) -> float:
            if not is_state(request):
                return 0.0
            delayed_states.append(request.path)
            return 3 * LATE

        ours_s3.delay = delay_states
        theirs_write = first_data_write()
        theirs_s3.delay = lambda request: LATE if theirs_write(request) else 0.0
        first = await make_registry({"REGISTRY_STORAGE_S3_REGIONENDPOINT": ours_url})
        second = await make_registry({"REGISTRY_STORAGE_S3_REGIONENDPOINT": theirs_url})
        finisher = await make_registry()
        prefix, ours, theirs = os.urandom(prefix_size), os.urandom(4099), os.urandom(4099)
        location = await start(finisher)
        location = await patch(finisher, location, prefix, 0)
        statuses = await asyncio.gather(
            race_patch(first, location, ours, prefix_size),
            race_patch(second, location, theirs, prefix_size),
        )
        assert all(status < 500 for status in statuses), statuses
        # The race this test is about: a loser's state saved last (none saved, none raced).
        assert delayed_states, "no hash state was stored: the race is not exercised"
        claimed = "sha256:" + hashlib.sha256(prefix + ours).hexdigest()
        done = await finisher.put(location, params={"digest": claimed})
        if done.status == 201:
            blob = await finisher.get(f"/v2/{NAME}/blobs/{claimed}")
            stored = await blob.read()
            assert "sha256:" + hashlib.sha256(stored).hexdigest() == claimed
        # ``theirs`` won the data: the digest of ``ours`` is refused, as the spec says.
        assert done.status == 400, await done.text()
        assert (await done.json())["errors"][0]["code"] == "DIGEST_INVALID"


async def test_a_chunk_whose_offset_is_taken_while_it_starts_is_refused(
    make_registry: ClientFactory, s3_server: S3Server
) -> None:
    """The chunk starts where the upload ended when its PATCH came, but another instance's
    chunk landed before this one's writer opened the data (the open's HEAD is the PATCH's
    only look at the data's size since a PATCH no longer reads a status first, issue 17):
    416, the data left as the winner wrote it, and not a 202 that appends after the
    winner's bytes."""
    async with s3_proxy(s3_server) as (late_s3, late_url):
        heads: list[web.Request] = []
        opening, released = asyncio.Event(), asyncio.Event()

        def writers_data_head(request: web.Request) -> asyncio.Event | None:
            # The writer's open waits until the winner has written.
            if request.method == "HEAD" and request.path.endswith("/data"):
                heads.append(request)
                if len(heads) == 1:
                    opening.set()
                    return released
            return None

        late_s3.gate = writers_data_head
        late = await make_registry({"REGISTRY_STORAGE_S3_REGIONENDPOINT": late_url})
        winner = await make_registry()
        prefix, ours, theirs = os.urandom(3001), os.urandom(4099), os.urandom(4099)
        location = await start(winner)
        location = await patch(winner, location, prefix, 0)
        racing = asyncio.ensure_future(race_patch(late, location, theirs, len(prefix)))
        try:
            async with asyncio.timeout(30):  # the late one opens the data
                await opening.wait()
            await patch(winner, location, ours, len(prefix))
        finally:
            released.set()  # never leave the proxy holding a request
        assert await racing == 416
        digest = "sha256:" + hashlib.sha256(prefix + ours).hexdigest()
        done = await winner.put(location, params={"digest": digest})
        assert done.status == 201, await done.text()
        blob = await winner.get(f"/v2/{NAME}/blobs/{digest}")
        assert await blob.read() == prefix + ours
