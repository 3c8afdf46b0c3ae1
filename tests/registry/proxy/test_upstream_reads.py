"""How the mirror reads a blob from its upstream: in large pieces, not 64 KiB at a time.

aiohttp's default read buffer (64 KiB) paused and resumed the upstream's socket for
every 128 KiB a download received and handed the mirror small chunks to hash, write
and pass on, each costing a loop turn: about 20% more CPU per MB of a cold pull.
"""

from __future__ import annotations

import asyncio

import aiohttp

from registry.oci.digest import parse_digest
from registry.proxy.upstream import READ_BUFFER, UpstreamClient
from tests.support.oci import make_image
from tests.support.portside_servers import ServerProcess
from tests.support.upstreams import push_image

WAIT = 2.0  # for the upstream to fill the buffer over loopback: generous


async def test_a_blob_is_read_from_the_upstream_in_large_pieces(
    open_upstream: ServerProcess,
) -> None:
    image = make_image(layer_count=1, layer_size=4 * READ_BUFFER, seed="reads")
    async with aiohttp.ClientSession() as session:
        await push_image(session, open_upstream.url, "library/big", "v1", image)
    layer = max(image.blobs, key=lambda digest: len(image.blobs[digest]))
    client = UpstreamClient(open_upstream.url, "", "", 30.0)
    try:
        async with client.blob("library/big", parse_digest(layer)) as (size, chunks):
            assert size == len(image.blobs[layer])
            await asyncio.sleep(WAIT)  # nothing read meanwhile: the buffer fills
            first = await anext(chunks)
            # With 64 KiB, reading paused at 128 KiB (plus at most one 256 KiB receive).
            assert len(first) >= READ_BUFFER
            received = first + b"".join([chunk async for chunk in chunks])
        assert received == image.blobs[layer]
    finally:
        await client.close()
