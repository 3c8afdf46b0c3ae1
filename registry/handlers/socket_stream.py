"""Sending a streamed blob (a backend without local files: S3) straight into the client's
socket, for the pieces the way ``sendfile`` is for files.

asyncio's socket transport (Python 3.11) keeps what a ``send`` did not take in a
``bytearray``: each piece of a pull is copied into it and, for every later ``send``,
the rest is moved to its front again. On a streamed pull from S3 those copies were the
largest part of the registry's CPU, beyond the kernel's own: a fifth of it in
``memmove`` alone. Here each piece goes to the socket as it is (``loop.sock_sendall``
sends from a memoryview and waits for room only when the socket is full), on a
duplicate of the socket's descriptor: asyncio refuses a second registration of the
transport's own. Nothing else writes to the connection until the body is out: the
status line and headers have left (the transport's buffer is empty) before the first
piece, and aiohttp writes no next response before this handler returns.

A source that can send itself into a socket (``SocketSource``: the S3 driver's reads
over plain HTTP) does so instead, inside the kernel (``splice``), and no piece passes
through Python at all. TLS transports, other loops' transports, and a transport still
holding the headers fall back to aiohttp's writer, pieces and all.
"""

from __future__ import annotations

import asyncio
import os
import socket
from asyncio.trsock import TransportSocket
from collections.abc import AsyncIterator

from aiohttp import web

from registry.response_headers import prepare
from registry.storage.socket_source import SocketSource
from shared.access_log import add_log_fields


async def stream_pieces(
    request: web.Request, response: web.StreamResponse, pieces: AsyncIterator[bytes], count: int
) -> None:
    """Prepare ``response`` and send the first ``count`` bytes of ``pieces`` as its body.
    Raises ConnectionResetError when the pieces end early or the client goes away."""
    await prepare(request, response)
    transport = request.transport
    sock = _plain_socket(transport)
    if sock is None or transport is None or transport.get_write_buffer_size():
        await _through_writer(response, pieces, count)
    elif isinstance(pieces, SocketSource):
        sent = await _spliced(sock, pieces, count)
        add_log_fields(request, {"http.response.written": sent})
    else:
        sent = await _through_socket(sock, pieces, count)
        # These bytes bypass aiohttp's writer, which counts the access line's.
        add_log_fields(request, {"http.response.written": sent})
    await response.write_eof()


def _plain_socket(transport: asyncio.Transport | None) -> int | None:
    """The descriptor of the transport's socket when bytes may go straight into it:
    a plain (not TLS) stream socket."""
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("ssl_object") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if not isinstance(sock, socket.socket | TransportSocket):
        return None
    if sock.type != socket.SOCK_STREAM:
        return None
    return sock.fileno()


async def _through_socket(fd: int, pieces: AsyncIterator[bytes], count: int) -> int:
    loop = asyncio.get_running_loop()
    remaining = count
    if remaining <= 0:
        return count  # an empty blob: the headers said it all
    with socket.socket(fileno=os.dup(fd)) as out:
        out.setblocking(False)
        async for piece in pieces:
            view = memoryview(piece)[:remaining]
            try:
                await loop.sock_sendall(out, view)
            except OSError as error:  # the client went away
                raise ConnectionResetError(f"blob transfer failed: {error}") from error
            remaining -= len(view)
            if remaining <= 0:
                return count
    raise ConnectionResetError("blob data ended early")


async def _spliced(fd: int, source: SocketSource, count: int) -> int:
    if count <= 0:
        return count  # an empty blob: the headers said it all
    with socket.socket(fileno=os.dup(fd)) as out:
        out.setblocking(False)
        await source.send_into(out, count)
    return count


async def _through_writer(
    response: web.StreamResponse, pieces: AsyncIterator[bytes], count: int
) -> None:
    remaining = count
    if remaining <= 0:
        return  # an empty blob: the headers said it all
    async for chunk in pieces:
        piece = chunk[:remaining]
        await response.write(piece)
        remaining -= len(piece)
        if remaining <= 0:
            return
    raise ConnectionResetError("blob data ended early")
