"""The request id of each request both services serve, and the log lines that carry it.

A request keeps the ``X-Request-Id`` it arrived with, so that one id follows a request
across a load balancer, the registry and the token server; a request without one, or with
one over :data:`MAX_REQUEST_ID` characters or outside a token's characters (it is copied
into log lines and a response header), gets a fresh UUID instead. The id is stored on the
request, set in a context variable while the request is served so that every line logged
meanwhile carries it (``shared.request_id``), and sent back on every response the app
makes, errors and streamed bodies included.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from contextvars import Token

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shared.client_address import note_client_address
from shared.networks import IPNetwork, parse_networks
from shared.request_id import current_request_id

REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 128  # a UUID is 36; the ids proxies and tracers make fit well within
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=@-]*")

REQUEST_ID = web.RequestKey("request_id", str)
_VARIANT_DIGITS = "89ab"


def request_id_from(header: str | None) -> str:
    """The id a request with this ``X-Request-Id`` value is known by."""
    if header and len(header) <= MAX_REQUEST_ID and _REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


def new_request_id() -> str:
    """A fresh version-4 UUID, as text.

    Drawn from the ``random`` module's generator, which reseeds itself in each forked
    worker: an id names a request and guards nothing, so it needs no system entropy, and
    ``str(uuid.uuid4())`` costs twice as much, on every request without an id. The
    version and variant digits are written into the text rather than masked into the
    number first: half the cost again.
    """
    value = random.getrandbits(128)
    text = f"{value:032x}"
    # Version 4 in the 13th digit; the RFC 4122 variant (binary 10xx) in the 17th, its
    # two low bits that digit's two high ones.
    variant = _VARIANT_DIGITS[value >> 62 & 3]
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{variant}{text[17:20]}-{text[20:]}"


def enter_request(request: web.Request, trusted_proxies: Sequence[IPNetwork]) -> Token[str | None]:
    """Name ``request`` for every log line and work out its client's address behind
    ``trusted_proxies`` (:mod:`shared.client_address`); the caller serves it, then passes
    the token returned to ``current_request_id.reset``. The first step of the outermost
    middleware of each service: :func:`request_id_middleware` here, the registry's own
    (:mod:`registry.middleware`), which does its other per-request steps in the same frame."""
    header = request.headers.get(REQUEST_ID_HEADER)
    # Most clients send none: a fresh id at once, one call fewer per request.
    request_id = new_request_id() if header is None else request_id_from(header)
    request[REQUEST_ID] = request_id
    note_client_address(request, trusted_proxies)
    return current_request_id.set(request_id)


def request_id_middleware(trusted_proxies: Sequence[IPNetwork] = ()) -> Middleware:
    """The outermost middleware of tokenauth: :func:`enter_request` around its handler."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = enter_request(request, trusted_proxies)
        try:
            return await handler(request)
        finally:
            current_request_id.reset(token)

    return middleware


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response the app makes names its request."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def install(app: web.Application, trusted_proxies: Sequence[str] = ()) -> None:
    """Put the request id on ``app``'s requests, log lines and responses, and the client
    address seen through ``trusted_proxies`` (``http.trustedproxies``) on its requests.
    Call it first, so the middleware is outermost and its header is on error responses
    too."""
    app.middlewares.insert(0, request_id_middleware(parse_networks(trusted_proxies)))
    app.on_response_prepare.append(send_request_id)
