"""``proxy.maxdownloads``: how many distinct blobs a mirror downloads from its upstreams
at once. More cold pulls than that wait their turn; every client still gets its blob."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

from tests.registry.conftest import ClientFactory, RegistryClient
from tests.support.oci import make_image
from tests.support.portside_servers import ServerProcess
from tests.support.upstreams import FaultyProxy, push_image

LIMIT = 2
BLOBS = 6
CLIENTS_PER_BLOB = 3


async def read_blob(client: RegistryClient, digest: str) -> tuple[int, str]:
    async with client.get(f"/v2/library/many/blobs/{digest}") as response:
        body = await response.read()
        return response.status, "sha256:" + hashlib.sha256(body).hexdigest()


async def test_distinct_downloads_are_bounded_under_concurrency(
    make_registry: ClientFactory, faulty: FaultyProxy, open_upstream: ServerProcess
) -> None:
    image = make_image(layer_count=BLOBS, layer_size=256 * 1024, seed="bounded")
    async with aiohttp.ClientSession() as session:
        await push_image(session, open_upstream.url, "library/many", "v1", image)
    mirror = await make_registry(
        {"REGISTRY_PROXY_REMOTEURL": faulty.url, "REGISTRY_PROXY_MAXDOWNLOADS": str(LIMIT)}
    )
    digests = sorted(image.blobs)
    faulty.delay = 0.3  # each upstream GET is still open when the next pulls arrive
    results = await asyncio.gather(
        *(read_blob(mirror, digest) for digest in digests for _ in range(CLIENTS_PER_BLOB))
    )
    assert results == [(200, digest) for digest in digests for _ in range(CLIENTS_PER_BLOB)]
    assert faulty.most_blob_gets_at_once == LIMIT  # reached, never passed
    assert all(faulty.blob_gets(digest) == 1 for digest in digests)  # still single-flight
