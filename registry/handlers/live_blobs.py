"""The body of an uncached blob of a mirrored repository, sent while its one download
runs: the live stream's pieces as they arrive, or, for a client that came once bytes
were flowing, the download's data file by ``sendfile`` as far as it is written."""

from __future__ import annotations

import contextlib

from aiohttp import web

from registry.handlers.sendfile import send_file
from registry.handlers.socket_stream import stream_pieces
from registry.proxy.mirror import FollowedLiveBlob, LiveBlob, StreamedLiveBlob
from registry.response_headers import prepare
from shared.access_log import add_log_fields


async def send_live_body(
    request: web.Request, response: web.StreamResponse, blob: LiveBlob
) -> None:
    """Prepare ``response`` and send ``blob``'s body; raises when the download fails."""
    if isinstance(blob, FollowedLiveBlob):
        with blob.follower as follower:
            # Prepared first, as for the stream: a download failing before the first
            # byte is written ends the transfer like one failing later.
            await prepare(request, response)
            sent = 0
            async for start, count in follower.ranges():
                sent += await send_file(request, response, follower.handle, start, count)
            # The kernel's bytes bypass aiohttp's writer, which counts the access line's.
            add_log_fields(request, {"http.response.written": sent})
            await response.write_eof()
        return
    assert isinstance(blob, StreamedLiveBlob)
    # Closed however the transfer ends: a reader left open would hold the shared
    # download back until it is dropped as too slow.
    async with contextlib.aclosing(blob.chunks) as chunks:
        await stream_pieces(request, response, chunks, blob.descriptor.size)
