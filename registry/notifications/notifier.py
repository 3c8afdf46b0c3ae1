"""The process's notifier: every configured endpoint, started and stopped with the app.

``notifier_context`` is the app's cleanup context: at start it creates one HTTP client
session and one :class:`Endpoint` per enabled endpoint, queues what the previous process
of this worker index saved, and starts delivering; at shutdown it gives deliveries a
moment to finish, then saves what is left (``spool``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from registry.config import RegistryConfig, listen_host_port
from registry.keys import CONFIG, METRICS
from registry.notifications.endpoint import Endpoint, EndpointStats
from registry.notifications.events import Event, Source
from registry.notifications.spool import Spool

log = logging.getLogger("registry.notifications")

# How long shutdown waits for queues to drain before saving what is left.
_DRAIN_SECONDS = 2.0


class Notifier:
    """Sends each event to every endpoint whose ignore rules let it through."""

    def __init__(self, endpoints: list[Endpoint], source: Source, include_references: bool) -> None:
        self.endpoints = endpoints
        self.source = source
        self.include_references = include_references

    def publish(self, event: Event) -> None:
        for endpoint in self.endpoints:
            if endpoint.wants(event):
                endpoint.put(event)

    def stats(self) -> dict[str, EndpointStats]:
        """Delivery counters by endpoint name (delivered, failed, dropped, pending)."""
        return {endpoint.name: endpoint.stats for endpoint in self.endpoints}

    async def drain(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every queue to empty."""
        deadline = asyncio.get_running_loop().time() + seconds
        while any(e.stats.pending for e in self.endpoints):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.05)


NOTIFIER = web.AppKey("notifier", Notifier)


@dataclass(frozen=True)
class WorkerSlot:
    """This process's place among ``--workers``: queue files are keyed by ``index``."""

    index: int = 0
    count: int = 1


WORKER = web.AppKey("worker", WorkerSlot)


def queue_directory(config: RegistryConfig) -> Path | None:
    """Where undelivered events are kept over a restart (None: nowhere)."""
    if config.notifications.queuedirectory:
        return Path(config.notifications.queuedirectory)
    if config.storage.filesystem is not None:
        return Path(config.storage.filesystem.rootdirectory) / "_notifications"
    return None


def _source(config: RegistryConfig) -> Source:
    port = None if config.http.net == "unix" else listen_host_port(config.http.addr)[1]
    return Source.for_port(port)


async def notifier_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    configured = config.notifications.active_endpoints
    if not configured:
        yield
        return
    directory = queue_directory(config)
    slot = app.get(WORKER, WorkerSlot())
    spool = Spool(directory, slot.index, slot.count) if directory is not None else None
    if spool is None:
        log.warning(
            "notifications.queuedirectory is not set and storage is not the filesystem: "
            "events still undelivered at shutdown will be lost"
        )
    async with aiohttp.ClientSession() as session:
        endpoints = [Endpoint(endpoint, session) for endpoint in configured]
        metrics = app.get(METRICS)
        if metrics is not None:
            for endpoint in endpoints:
                endpoint.on_delivered = metrics.notifications_delivered(endpoint.name).inc
                endpoint.on_failed = metrics.notifications_failed(endpoint.name).inc
                endpoint.on_dropped = metrics.notifications_dropped(endpoint.name).inc
        for endpoint in endpoints:
            if spool is not None:
                saved = await asyncio.to_thread(
                    spool.take, endpoint.name, endpoint.config.queuelimit
                )
                endpoint.restore(saved)
            endpoint.start()
        notifier = Notifier(
            endpoints, _source(config), config.notifications.events.includereferences
        )
        app[NOTIFIER] = notifier
        try:
            yield
        finally:
            await notifier.drain(_DRAIN_SECONDS)
            for endpoint in endpoints:
                await endpoint.stop()
                if spool is not None:
                    await asyncio.to_thread(spool.save, endpoint.name, endpoint.pending())
