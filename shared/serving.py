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
closed by either. A third bounds the body itself, which Go leaves to ``ReadTimeout``:

- ``body``: while a handler awaits request body bytes, one must arrive within this long,
  else the read raises :class:`shared.http_server.BodyTimeout` (the services answer 408)
  and the connection is closed after the answer. Only a wait for the client counts: a
  handler busy elsewhere (storage, hashing) never lets the timer run.

Requests aiohttp's parser refuses are answered without their content
(``shared.http_server``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import BaseTimerContext
from aiohttp.streams import EmptyStreamReader, StreamReader
from aiohttp.web_request import BaseRequest

from shared.errors import ErrorCode
from shared.http_server import BodyTimeout, QuietRequestHandler
from shared.listener import system_backlog
from shared.timeouts import DEFAULT_BODY_TIMEOUT


@dataclass(frozen=True)
class ConnectionTimeouts:
    """Seconds; all must be positive."""

    read_header: float
    idle: float
    body: float = DEFAULT_BODY_TIMEOUT.total_seconds()


class BodyReadTimer(BaseTimerContext):
    """The timer aiohttp's ``StreamReader`` enters around each wait for body bytes (the
    hook its client uses for read timeouts): a wait longer than ``seconds`` fails the
    payload with :class:`BodyTimeout`, which every later read raises too."""

    __slots__ = ("_handle", "_payload", "_seconds")

    def __init__(self, payload: StreamReader, seconds: float) -> None:
        self._payload, self._seconds = payload, seconds
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> BaseTimerContext:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self._seconds, self._expire)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        self._payload.set_exception(BodyTimeout(f"no body byte for {self._seconds:g}s"))


class _NoDelayAlreadySet(BaseProtocol):
    """Placed between aiohttp's RequestHandler and its BaseProtocol (see below): takes
    the transport as BaseProtocol does, without setting ``TCP_NODELAY`` again. asyncio's
    socket transport sets it on every TCP connection it builds (TLS ones ride on such a
    transport), so aiohttp's second ``setsockopt``, with its transport and socket-family
    look-ups, was a system call and a few microseconds per connection for nothing."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # aiohttp's own cast


class HeaderTimeoutRequestHandler(QuietRequestHandler, _NoDelayAlreadySet):
    """aiohttp's HTTP/1.1 connection protocol, quiet about refused requests, plus a
    deadline for each request head and a bound on each pause inside a request body."""

    __slots__ = ("_head_timer", "_read_header_timeout")

    def __init__(
        self,
        manager: web.Server,
        *,
        read_header_timeout: float,
        body_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._read_header_timeout = read_header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        # aiohttp has no option for a server-side payload timer: every request is made
        # through this factory, which gives its body one.
        make_request = self._request_factory
        assert make_request is not None  # set by RequestHandler.__init__

        def request_with_body_timer(
            message: Any, payload: StreamReader, *args: Any, **kwargs: Any
        ) -> BaseRequest:
            if not isinstance(payload, EmptyStreamReader):  # never the shared empty one
                payload._timer = BodyReadTimer(payload, body_timeout)
            return make_request(message, payload, *args, **kwargs)

        self._request_factory = request_with_body_timer

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        # A body that failed (it stopped arriving, or could not be parsed or decoded) ends
        # the connection after the answer. aiohttp would otherwise read on to discard the
        # rest ("lingering"): from a stalled client for 10 more seconds, and from a failed
        # body by raising its error again, logged at ERROR with a traceback.
        unreadable = request.content.exception() is not None
        if unreadable and not resp.prepared:
            resp.force_close()  # Connection: close: the rest of the body is not awaited
        answered = await super().finish_response(request, resp, start_time)
        if unreadable:
            self.force_close()
        return answered

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


def _keep_alive(sock: socket.socket) -> None:
    """TCP keep-alive probes on the connections ``sock`` accepts (a no-op elsewhere)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


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
    # TCP keep-alive probes (aiohttp's tcp_keepalive) are asked of the listening sockets
    # once, and Linux gives every accepted connection the listener's setting: aiohttp's
    # own way costs each new connection a transport look-up and a setsockopt call.
    options = {**server._kwargs, "keepalive_timeout": timeouts.idle}
    if options.pop("tcp_keepalive", True):
        for sock in sockets:
            _keep_alive(sock)
    options["tcp_keepalive"] = False

    def connection() -> HeaderTimeoutRequestHandler:
        return HeaderTimeoutRequestHandler(
            server,
            loop=loop,
            error_code=error_code,
            read_header_timeout=timeouts.read_header,
            body_timeout=timeouts.body,
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
