"""The client address behind trusted proxies (shared.client_address), over a real socket:
a small app answers with what :func:`client_address` makes of each request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from shared import request_context
from shared.client_address import CLIENT_ADDRESS, client_address
from shared.networks import parse_networks

Client = TestClient[web.Request, web.Application]
LOOPBACK = "127.0.0.0/8"


async def answer_address(request: web.Request) -> web.Response:
    return web.Response(text=client_address(request) or "")


async def address_client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], trusted: list[str]
) -> Client:
    app = web.Application()
    request_context.install(app, trusted)  # works the address out as the services' apps do
    app.router.add_get("/", answer_address)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("trusted", "headers", "expected"),
    [
        # No trusted proxy: the headers are anyone's to write, and ignored.
        ([], {"X-Forwarded-For": "203.0.113.9"}, "127.0.0.1"),
        ([], {"Forwarded": "for=203.0.113.9"}, "127.0.0.1"),
        # A peer outside the trusted list is not believed either.
        (["10.0.0.0/8"], {"X-Forwarded-For": "203.0.113.9"}, "127.0.0.1"),
        ([LOOPBACK], {}, "127.0.0.1"),
        ([LOOPBACK], {"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),
        # The rightmost untrusted hop: what the client prepended is never reached.
        (
            [LOOPBACK, "10.0.0.0/8"],
            {"X-Forwarded-For": "6.6.6.6, 198.51.100.7, 10.1.2.3"},
            "198.51.100.7",
        ),
        ([LOOPBACK], {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),
        # An unreadable hop ends the walk at the last trusted proxy.
        ([LOOPBACK, "10.0.0.0/8"], {"X-Forwarded-For": "198.51.100.7, junk, 10.1.2.3"}, "10.1.2.3"),
        # RFC 7239: quoted IPv6 with a port, several elements; it wins over X-Forwarded-For.
        ([LOOPBACK], {"Forwarded": 'for="[2001:db8::17]:4711";proto=https'}, "2001:db8::17"),
        ([LOOPBACK], {"Forwarded": "for=192.0.2.60:80, for=198.51.100.1"}, "198.51.100.1"),
        (
            [LOOPBACK],
            {"Forwarded": "for=192.0.2.60", "X-Forwarded-For": "203.0.113.9"},
            "192.0.2.60",
        ),
        ([LOOPBACK], {"Forwarded": "for=unknown"}, "127.0.0.1"),
    ],
)
async def test_client_address(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    trusted: list[str],
    headers: dict[str, str],
    expected: str,
) -> None:
    client = await address_client(aiohttp_client, trusted)
    async with client.get("/", headers=headers) as response:
        assert await response.text() == expected


async def test_hops_are_bounded(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """A header of hundreds of trusted hops costs a bounded walk: its last hops only."""
    client = await address_client(aiohttp_client, [LOOPBACK])
    chain = ", ".join(["198.51.100.7"] + ["127.0.0.2"] * 500)
    async with client.get("/", headers={"X-Forwarded-For": chain}) as response:
        assert response.status == 200
        assert await response.text() == "127.0.0.2"  # the walk stopped within the bound


async def test_the_address_is_noted_once_on_every_request(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    """Noted as the request reaches the app, with or without trusted proxies: the access
    line and everything else read the note, and never a missing key (whose KeyError
    ``request.get`` raises and catches, per request)."""
    app = web.Application()
    request_context.install(app, [])

    async def noted(request: web.Request) -> web.Response:
        return web.Response(text=request[CLIENT_ADDRESS])

    app.router.add_get("/", noted)
    client = await aiohttp_client(app)
    async with client.get("/", headers={"X-Forwarded-For": "203.0.113.9"}) as response:
        assert response.status == 200
        assert await response.text() == "127.0.0.1"


def test_trusted_proxies_must_be_networks() -> None:
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        parse_networks(["10.0.0.0/8", "proxy.example"])
