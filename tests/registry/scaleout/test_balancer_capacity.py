"""The test balancer (tests/support/balancer.py) carries as many requests at once as the
chaos soak's 100 clients make: with nginx's worker_connections at 256 it dropped
thousands of connections in the soak ("256 worker_connections are not enough")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.balancer import NginxBalancer
from tests.support.tools import free_port

CONCURRENT = 300  # each takes two of nginx's connections: the client's and the upstream's


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.0)  # long enough for every request to be in flight at once
    return web.Response(text="ok")


@dataclass
class Backend:
    port: int


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """The slow upstream, with a listen backlog that holds every connection nginx opens
    at once (the default 128 overflowed on a loaded machine: nginx's 2 s connect timeout
    then answered 504, which is not what this test is about)."""
    app = web.Application()
    app.router.add_get("/", _slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2 * CONCURRENT)
    await site.start()
    try:
        yield Backend(port)
    finally:
        await runner.cleanup()


@pytest.fixture
def balancer(tmp_path: Path, backend: Backend) -> Iterator[NginxBalancer]:
    nginx = NginxBalancer(tmp_path / "nginx", [backend])
    nginx.start()
    try:
        yield nginx
    finally:
        nginx.stop()


async def test_hundreds_of_requests_at_once_all_get_through(balancer: NginxBalancer) -> None:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(60)
    ) as session:

        async def get() -> int | str:
            try:
                async with session.get(balancer.url + "/") as response:
                    await response.read()
                    return response.status
            except aiohttp.ClientError as error:
                return type(error).__name__

        answers = await asyncio.gather(*(get() for _ in range(CONCURRENT)))
    assert answers == [200] * CONCURRENT, sorted(set(map(str, answers)))
