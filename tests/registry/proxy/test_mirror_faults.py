"""The pull-through cache when the upstream fails: cut off in the middle of a blob,
sending wrong bytes, and many clients asking at once for one uncached blob."""

from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import pytest

from tests.registry.conftest import RegistryClient
from tests.registry.helpers import assert_error, send
from tests.registry.proxy.conftest import sha256
from tests.support.oci import OCI_MANIFEST, Image, make_image
from tests.support.portside_servers import ServerProcess
from tests.support.upstreams import FaultyProxy, push_image

BIG = 24 * 1024 * 1024


async def pushed_blob(upstream: ServerProcess, size: int, seed: str) -> tuple[str, Image]:
    """An image whose one layer is about ``size`` incompressible bytes; the layer's digest."""
    image = make_image(layer_count=1, layer_size=size, seed=seed)
    async with aiohttp.ClientSession() as session:
        await push_image(session, upstream.url, "library/big", "v1", image)
    return sha256(image.layers[0]), image


async def read_blob(client: RegistryClient, digest: str) -> tuple[int, str | None]:
    """Status and sha256 of the whole body; None when the transfer broke off."""
    async with client.get(f"/v2/library/big/blobs/{digest}") as response:
        hasher = hashlib.sha256()
        try:
            async for chunk in response.content.iter_chunked(256 * 1024):
                hasher.update(chunk)
        except aiohttp.ClientPayloadError:
            return response.status, None
        return response.status, "sha256:" + hasher.hexdigest()


async def test_upstream_cut_mid_blob_caches_nothing_and_the_next_pull_works(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, _ = await pushed_blob(open_upstream, 4 * 1024 * 1024, "cut")
    faulty.cut_blobs_after = 1024 * 1024
    status, got = await read_blob(mirror, digest)
    assert status == 200 and got is None  # the client sees the transfer fail
    # Nothing partial was kept: a HEAD with the upstream refusing finds nothing cached.
    faulty.refuse = True
    head = await send(mirror, "HEAD", f"/v2/library/big/blobs/{digest}")
    assert head.status == 503
    faulty.refuse, faulty.cut_blobs_after = False, None
    status, got = await read_blob(mirror, digest)
    assert (status, got) == (200, digest)
    assert faulty.blob_gets(digest) == 2
    # Now cached: served with the upstream gone.
    faulty.refuse = True
    assert await read_blob(mirror, digest) == (200, digest)


async def test_wrong_bytes_are_refused_and_not_cached(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, image = await pushed_blob(open_upstream, 2 * 1024 * 1024, "wrong")
    faulty.corrupt_blobs = True
    status, got = await read_blob(mirror, digest)
    assert status == 200 and got is None  # the last bytes are held until verified
    ranged = await send(
        mirror, "GET", f"/v2/library/big/blobs/{digest}", headers={"Range": "bytes=0-9"}
    )
    assert_error(ranged, 503, "UNAVAILABLE")
    assert "fetching the blob from the upstream failed" in ranged.body.decode()
    assert "/" + "_uploads" not in ranged.body.decode()  # no storage path reaches a client
    faulty.corrupt_manifests = True
    manifest = await send(
        mirror, "GET", "/v2/library/big/manifests/v1", headers={"Accept": OCI_MANIFEST}
    )
    assert_error(manifest, 502, "UNAVAILABLE")
    faulty.corrupt_blobs = faulty.corrupt_manifests = False
    # Nothing wrong was kept: the right bytes come through now.
    assert await read_blob(mirror, digest) == (200, digest)
    manifest = await send(
        mirror, "GET", "/v2/library/big/manifests/v1", headers={"Accept": OCI_MANIFEST}
    )
    assert manifest.status == 200 and manifest.body == image.manifest


async def test_concurrent_pulls_of_one_uncached_blob_make_one_upstream_get(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, _ = await pushed_blob(open_upstream, BIG, "herd")
    faulty.delay = 0.5  # the clients all ask before the upstream answers
    results = await asyncio.gather(*(read_blob(mirror, digest) for _ in range(50)))
    assert results == [(200, digest)] * 50
    assert faulty.blob_gets(digest) == 1


async def test_a_client_hanging_up_does_not_hold_the_others_back(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, _ = await pushed_blob(open_upstream, 16 * 1024 * 1024, "hangup")
    faulty.delay = 0.5  # all three ask before the upstream answers

    async def hang_up() -> None:
        async with mirror.get(f"/v2/library/big/blobs/{digest}") as response:
            await response.content.readexactly(64 * 1024)
            response.close()

    started = time.monotonic()
    results = await asyncio.gather(hang_up(), read_blob(mirror, digest), read_blob(mirror, digest))
    # A reader left behind would stall the shared download for fetches.STALL_TIMEOUT (60 s).
    assert time.monotonic() - started < 30
    assert list(results[1:]) == [(200, digest)] * 2
    assert faulty.blob_gets(digest) == 1


async def test_a_manifest_the_registry_cannot_store_is_a_bad_gateway(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    _, image = await pushed_blob(open_upstream, 1024, "unusable")
    # An OCI image manifest announced as an index: it does not parse as one.
    faulty.manifest_type = "application/vnd.oci.image.index.v1+json"
    reply = await send(
        mirror, "GET", "/v2/library/big/manifests/v1", headers={"Accept": OCI_MANIFEST}
    )
    assert_error(reply, 502, "UNAVAILABLE")
    faulty.manifest_type = ""
    reply = await send(
        mirror, "GET", "/v2/library/big/manifests/v1", headers={"Accept": OCI_MANIFEST}
    )
    assert reply.status == 200 and reply.body == image.manifest


async def test_a_client_coming_late_follows_the_same_download(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    """It is sent the download's data file as far as it is written (``sendfile``)."""
    await late_client_follows(mirror, faulty, open_upstream)


@pytest.mark.parametrize("registry_environ", [{"REGISTRY_STORAGE": "inmemory"}])
async def test_a_client_coming_late_follows_a_download_into_a_store_without_files(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    """Storage that keeps no local file (S3, memory): the upload is read back."""
    await late_client_follows(mirror, faulty, open_upstream)


async def late_client_follows(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, _ = await pushed_blob(open_upstream, 8 * 1024 * 1024, "late")
    faulty.blob_chunk_delay = 0.03  # a slow upstream: 8 MiB take about 4 s
    flowing = asyncio.Event()
    ended: list[float] = []

    async def receive(
        on_first_byte: asyncio.Event | None = None,
    ) -> tuple[int, str, float]:
        async with mirror.get(f"/v2/library/big/blobs/{digest}") as response:
            hasher = hashlib.sha256()
            first_byte = 0.0
            async for chunk in response.content.iter_chunked(64 * 1024):
                first_byte = first_byte or time.monotonic()
                if on_first_byte is not None:
                    on_first_byte.set()
                hasher.update(chunk)
            ended.append(time.monotonic())
            return response.status, "sha256:" + hasher.hexdigest(), first_byte

    async def late() -> tuple[int, str, float]:
        await flowing.wait()  # bytes are flowing to the first client
        return await receive()

    first, second = await asyncio.gather(receive(flowing), late())
    assert first[:2] == second[:2] == (200, digest)
    assert faulty.blob_gets(digest) == 1
    # The late client was sent bytes while the download was still going on (it takes
    # seconds), not only once it was committed.
    assert second[2] < min(ended) - 1.0


async def test_a_late_client_of_a_download_that_breaks_sees_it_fail(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    digest, _ = await pushed_blob(open_upstream, 8 * 1024 * 1024, "late-cut")
    faulty.blob_chunk_delay = 0.01
    faulty.cut_blobs_after = 6 * 1024 * 1024
    flowing = asyncio.Event()

    async def first() -> tuple[int, str | None]:
        async with mirror.get(f"/v2/library/big/blobs/{digest}") as response:
            try:
                async for _ in response.content.iter_chunked(64 * 1024):
                    flowing.set()
            except aiohttp.ClientPayloadError:
                return response.status, None
            return response.status, "complete"

    async def late() -> tuple[int, str | None]:
        await flowing.wait()
        return await read_blob(mirror, digest)

    assert list(await asyncio.gather(first(), late())) == [(200, None), (200, None)]
    faulty.cut_blobs_after = None
    faulty.blob_chunk_delay = 0.0
    assert await read_blob(mirror, digest) == (200, digest)
    assert faulty.blob_gets(digest) == 2
