"""Serving an aiohttp app on already bound sockets (see :mod:`shared.listener`), for both
services, with the connection timeouts aiohttp lacks and the system's accept backlog.

Two timeouts bound what a client may hold without sending a request, the way Go's
``http.Server`` does with ``IdleTimeout`` and ``ReadHeaderTimeout``:

- ``idle``: a connection is closed when no complete request head has arrived within this
  long of its opening or of the end of the previous response (aiohttp's keep-alive timer).
- ``read_header``: once the first byte of a request head has arrived, the whole head must
  arrive within this long, so a client that trickles header lines (slowloris) is dropped
  even while it keeps sending. It also bounds the TLS handshake.

A connection that is serving a request (reading its body, streaming a response) is never
closed by either. Requests aiohttp's parser refuses are answered without their content
(``shared.http_server``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from shared.errors import ErrorCode
from shared.http_server import QuietRequestHandler
from shared.listener import system_backlog

# The connection timeouts of both services (http.readheadertimeout, http.idletimeout). A
# request head is a few hundred bytes: 20 s is ample on any link. Idle
# connections outlive Docker's (Go's) 90 s and the usual proxies' 60-75 s, so the client
# closes first and never sends a request on a connection the server is closing.
DEFAULT_READ_HEADER_TIMEOUT = timedelta(seconds=20)
DEFAULT_IDLE_TIMEOUT = timedelta(seconds=120)


def positive_duration(value: timedelta) -> timedelta:
    """Config check for the timeouts: zero would close every connection at once."""
    if value <= timedelta(0):
        raise ValueError("must be a positive duration such as 20s")
    return value


@dataclass(frozen=True)
class ConnectionTimeouts:
    """Seconds; both must be positive."""

    read_header: float
    idle: float


class HeaderTimeoutRequestHandler(QuietRequestHandler):
    """aiohttp's HTTP/1.1 connection protocol, quiet about refused requests, plus a
    deadline for each request head."""

    __slots__ = ("_head_timer", "_read_header_timeout")

    def __init__(self, manager: web.Server, *, read_header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._read_header_timeout = read_header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def _awaiting_request(self) -> bool:
        # start() waits on _waiter exactly while no request has been parsed or is being
        # handled: bytes arriving then belong to the head of the next request.
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def data_received(self, data: bytes) -> None:
        head_started = self._head_timer is None and self._awaiting_request()
        super().data_received(data)
        if not self._awaiting_request():  # the head is complete (or the connection closed)
            self._cancel_head_timer()
        elif head_started:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self._read_header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_request():
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)


@asynccontextmanager
async def serving(
    app: web.Application,
    sockets: list[socket.socket],
    *,
    timeouts: ConnectionTimeouts,
    error_code: ErrorCode,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 60.0,
    **handler_options: Any,
) -> AsyncIterator[None]:
    """Serve ``app`` on ``sockets`` until the block exits, then drain as aiohttp does.

    ``error_code`` names what a request aiohttp's parser refuses gets in its JSON body;
    ``handler_options`` go to aiohttp's request handler (``access_log=None`` turns the
    access log off); the app's own ``handler_args`` take precedence, as in aiohttp.
    """
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, **handler_options)
    await runner.setup()
    server = runner.server
    assert server is not None  # set by setup()
    loop = asyncio.get_running_loop()
    # The options aiohttp's Server would give each connection (the app's handler_args,
    # debug, the access log), plus the timeouts; aiohttp has no hook for the protocol class.
    options = {**server._kwargs, "keepalive_timeout": timeouts.idle}

    def connection() -> HeaderTimeoutRequestHandler:
        return HeaderTimeoutRequestHandler(
            server,
            loop=loop,
            error_code=error_code,
            read_header_timeout=timeouts.read_header,
            **options,
        )

    listening: list[asyncio.Server] = []
    try:
        backlog = system_backlog()
        for sock in sockets:
            listening.append(
                await loop.create_server(
                    connection,
                    sock=sock,
                    ssl=ssl_context,
                    backlog=backlog,
                    ssl_handshake_timeout=timeouts.read_header if ssl_context else None,
                )
            )
        yield
    finally:
        for listener in listening:
            listener.close()
        await runner.cleanup()
