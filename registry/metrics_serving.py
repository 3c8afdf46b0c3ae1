"""Serving the registry's metrics: the scrape route of the debug app, flushed tallies, and
whether metrics are served at all (the directory through which the workers of
``--workers N`` add up to one scrape is ``shared.metrics.worker_samples``).

Every worker binds the debug address (SO_REUSEPORT), so any one of them answers a scrape.
With several workers, each writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode) and the one answering sums them all. The files of
a worker that died stay, so a replaced worker never makes a counter go backwards; only its
live gauges (requests in flight) are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from registry.config import RegistryConfig
from registry.keys import METRICS
from shared.metrics import exposition, multiprocess_dir

log = logging.getLogger("registry")

# How often a worker adds its tallies to the shared files when several workers serve: a
# scrape answered by another worker may miss at most this much of this one's counts.
FLUSH_SECONDS = 1.0


async def flushing(app: web.Application) -> AsyncIterator[None]:
    """The registry app's metrics flushed every second with several workers, and once at
    the end, so that a clean stop loses no count."""
    metrics = app[METRICS]
    task = asyncio.create_task(_flush_every(app)) if multiprocess_dir() is not None else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    metrics.flush()


async def _flush_every(app: web.Application) -> None:
    metrics = app[METRICS]
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        metrics.flush()


def metrics_served(config: RegistryConfig) -> bool:
    """Whether metrics are served: enabled, on a debug address (as in Distribution, the
    metrics are never on the API's address; without one, they are not kept at all)."""
    return config.http.debug.prometheus.enabled and bool(config.http.debug.addr)


def add_metrics_route(app: web.Application, served: web.Application, path: str) -> None:
    """``GET path`` on the debug ``app``: the metrics of ``served`` (of every worker)."""
    metrics = served[METRICS]

    async def get_metrics(request: web.Request) -> web.Response:
        metrics.flush()  # this worker's counts up to now; the others flush every second
        # Reading every worker's files is blocking work: off the event loop.
        body, content_type = await asyncio.to_thread(exposition, metrics.registry)
        response = web.Response(body=body, headers={"Cache-Control": "no-store"})
        response.headers["Content-Type"] = content_type
        return response

    app.router.add_get(path, get_metrics)
