"""The test balancer (tests/support/balancer.py) carries as many requests at once as the
chaos soak's 100 clients make: with nginx's worker_connections at 256 it dropped
thousands of connections in the soak ("256 worker_connections are not enough")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.balancer import NginxBalancer

CONCURRENT = 300  # each takes two of nginx's connections: the client's and the upstream's


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.0)  # long enough for every request to be in flight at once
    return web.Response(text="ok")


@pytest.fixture
async def backend() -> TestServer:
    app = web.Application()
    app.router.add_get("/", _slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
def balancer(tmp_path: Path, backend: TestServer) -> Iterator[NginxBalancer]:
    assert backend.port is not None
    nginx = NginxBalancer(tmp_path / "nginx", [backend])  # type: ignore[list-item]
    nginx.start()
    yield nginx
    nginx.stop()


async def test_hundreds_of_requests_at_once_all_get_through(
    balancer: NginxBalancer, backend: TestServer
) -> None:
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
    await backend.close()
