"""How the mirror reads a blob from its upstream: each piece handed on as the socket
received it, never joined with the others waiting in the read buffer.

The upstream session reads with a 1 MiB buffer (aiohttp's 64 KiB paused and resumed the
socket every 128 KiB). With that buffer full, ``iter_any`` joined everything waiting into
one new bytes object, a copy of every byte on the mirror's event loop (a sixth of its
time on a cold pull); the pieces are now handed on one receive at a time.
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
# The most one receive brings (asyncio's selector transport reads at most 256 KiB).
ONE_RECEIVE = 256 * 1024


async def test_a_blob_is_handed_on_as_received_never_joined(
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
            pieces = [chunk async for chunk in chunks]
        # Joined, the first piece was everything buffered: READ_BUFFER bytes or more.
        assert max(len(piece) for piece in pieces) <= ONE_RECEIVE
        assert b"".join(pieces) == image.blobs[layer]
    finally:
        await client.close()
