"""A local receiver of registry notifications: an aiohttp app on a loopback port that
records every envelope POSTed to it, and can be taken down and brought back up on the
same port to play an endpoint that is down for a while."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.tools import free_port


@dataclass
class Delivery:
    """One POST: its headers and the events of its envelope."""

    headers: dict[str, str]
    events: list[dict[str, Any]]


@dataclass
class EventReceiver:
    """Records what is POSTed to ``url``; ``start``/``stop`` open and close its port."""

    port: int = field(default_factory=free_port)
    deliveries: list[Delivery] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for delivery in self.deliveries for event in delivery.events]

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.deliveries.append(Delivery(dict(request.headers), body["events"]))
        self._arrived.set()
        return web.Response()

    async def _moved(self, request: web.Request) -> web.Response:
        """A receiver that moved: POST again at ``url`` (``/moved`` answers 307 to it)."""
        raise web.HTTPTemporaryRedirect(self.url)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._receive)
        app.router.add_post("/moved", self._moved)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, seconds: float = 30.0) -> list[dict[str, Any]]:
        """The events received once there are at least ``count`` (fails after ``seconds``)."""
        try:
            async with asyncio.timeout(seconds):
                while len(self.events) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"{len(self.events)} of {count} events arrived: {self.events}"
            ) from None
        return self.events


def notifications_env(**endpoint: Any) -> str:
    """A ``REGISTRY_NOTIFICATIONS`` value (JSON is YAML) with the one endpoint given."""
    return json.dumps({"endpoints": [{"name": "test", **endpoint}]})
