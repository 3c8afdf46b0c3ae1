"""Build the registry's aiohttp application from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from registry.auth.base import AccessController
from registry.auth.factory import create_access_controller
from registry.auth.middleware import auth_middleware
from registry.config import RegistryConfig
from registry.gc_schedule import collect_periodically
from registry.health.endpoints import health_context, health_gate
from registry.health.factory import api_is_gated
from registry.keys import CONFIG, MAINTENANCE, METRICS, MIRRORS, STORAGE
from registry.metrics import RegistryMetrics
from registry.metrics_serving import flushing, metrics_served
from registry.middleware import request_middleware
from registry.notifications.notifier import WORKER, WorkerSlot, notifier_context
from registry.proxy.mirror import Mirrors
from registry.response_headers import RESPONSE_HEADERS, response_headers
from registry.routes import dispatch, get_base, get_root, resolve_and_dispatch
from registry.shutdown import bounded
from registry.storage.retention import apply_periodically
from registry.ui import setup_ui
from registry.upload_state import UPLOAD_STATE, UploadStateSigner
from registry.urls import path_prefix
from registry.wiring import (
    create_blob_descriptor_cache,
    create_storage,
    mirror_retention_policies,
    retention_policies,
)
from shared.networks import parse_networks

# What aiohttp reads ahead of a request body's reader, per connection, before it stops
# reading that socket (it pauses at twice this; its default is 64 KiB). An upload that
# waits for a slot (storage.upload_slots) reads nothing meanwhile: what it was sent
# waits in the kernel's socket buffer, except about this much. With 150 layers pushed
# at once, 64 KiB left a peak RSS of 152-162 MiB and 32 KiB 123-124 MiB; 16 KiB held no
# less and cost CPU (a pause and a resume of the socket per 32 KiB read; issue 17).
READ_BUFSIZE = 32 * 1024


def create_app(
    config: RegistryConfig,
    *,
    maintenance: bool = True,
    controller: AccessController | None = None,
    worker: WorkerSlot | None = None,
) -> web.Application:
    """The registry app; ``maintenance`` runs background upkeep (one worker per host).

    ``controller`` is the access controller ``registry serve`` already built from
    ``config`` to check it (so users files are read, and warned about, once); without it
    the one ``config`` names is built here. ``worker`` is the process's place among
    ``--workers`` (its notification queue files are keyed by it).
    """
    # Created here, in the worker: after the supervisor chose multiprocess mode (see
    # registry.metrics_serving), and only when served: without it, requests pay nothing.
    metrics = RegistryMetrics() if metrics_served(config) else None
    # Request id, metrics, error envelope and the standard response headers (X-Request-Id,
    # the API version and http.headers) in one middleware (registry.middleware); then the
    # health gate, as Distribution's health.Handler wraps the whole API.
    trusted = parse_networks(config.http.trustedproxies)
    set_headers = response_headers(config.http.headers)
    middlewares: list[Middleware] = [request_middleware(trusted, metrics, set_headers)]
    if api_is_gated(config):
        middlewares.append(health_gate)
    controller = controller or create_access_controller(config)
    if controller is not None:
        middlewares.append(auth_middleware(controller))
    app = web.Application(
        middlewares=middlewares,
        handler_args={"max_field_size": 16384, "read_bufsize": READ_BUFSIZE},
    )
    app[CONFIG] = config
    app[RESPONSE_HEADERS] = set_headers  # for handlers that send their body themselves
    if metrics is not None:
        app[METRICS] = metrics
        app.cleanup_ctx.append(bounded(flushing))
    app[MAINTENANCE] = maintenance
    app[UPLOAD_STATE] = UploadStateSigner.from_config(config)
    app.cleanup_ctx.append(bounded(_storage_context))
    app.cleanup_ctx.append(bounded(_cache_context))
    app.cleanup_ctx.append(bounded(health_context))
    app.cleanup_ctx.append(bounded(_mirrors_context))
    app[WORKER] = worker or WorkerSlot()
    app.cleanup_ctx.append(bounded(notifier_context))
    if controller is not None:
        app.on_startup.append(lambda _: controller.start())
        app.on_cleanup.append(lambda _: controller.close())
    prefix = path_prefix(config)
    app.router.add_get("/", get_root)
    if prefix:
        app.router.add_get(prefix + "/", get_root)
    # The API's routes first: aiohttp tries the resources under "/v2" in the order they
    # were added, and "/v2/", "/v2" first cost every API request two failed matches.
    # "{tail:.+}" never matches those two paths, so the order changes no answer.
    # Behind the auth middleware the route is resolved before the handler runs.
    api = dispatch if controller is not None else resolve_and_dispatch
    app.router.add_route("*", prefix + "/v2/{tail:.+}", api)
    app.router.add_get(prefix + "/v2/", get_base)
    app.router.add_get(prefix + "/v2", get_base)
    setup_ui(app, config, controller)  # the web interface, when ui.enabled
    return app


async def _storage_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    registry = create_storage(config, app.get(METRICS))
    app[STORAGE] = registry
    purging = config.storage.maintenance.uploadpurging
    purger = None
    readonly = config.storage.maintenance.readonly.enabled
    if purging.enabled and app[MAINTENANCE] and not readonly:
        purger = asyncio.create_task(
            registry.purge_uploads_periodically(
                purging.age.total_seconds(),
                purging.interval.total_seconds(),
                purging.dryrun,
            )
        )
    elif app[MAINTENANCE] and not readonly:
        # Without purging, leftovers of killed writers are still removed once at start-up.
        purger = asyncio.create_task(registry.remove_leftovers())
    # Every worker notes the pulls it serves, so every worker flushes its own notes.
    flusher = asyncio.create_task(registry.flush_pulls_periodically())
    retention = config.storage.retention
    applier = None
    if retention.interval and retention.policies and app[MAINTENANCE] and not readonly:
        applier = asyncio.create_task(
            apply_periodically(
                registry, retention_policies(config), retention.interval.total_seconds()
            )
        )
    gc = config.storage.gc
    collector = None
    if gc.interval and app[MAINTENANCE] and not readonly:
        collector = asyncio.create_task(collect_periodically(registry, config))
    yield
    for task in (purger, flusher, applier, collector):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    try:
        await registry.flush_pulls()  # pulls noted since the last flush are not lost
    finally:
        await registry.close()


async def _cache_context(app: web.Application) -> AsyncIterator[None]:
    """The blob-descriptor cache (storage.cache.blobdescriptor), if any."""
    cache = create_blob_descriptor_cache(app[CONFIG], app.get(METRICS))
    app[STORAGE].blob_store.cache = cache
    yield
    if cache is not None:
        await cache.close()


async def _mirrors_context(app: web.Application) -> AsyncIterator[None]:
    """The pull-through cache's upstream clients (``proxy``), closed with the app."""
    config = app[CONFIG]
    mirrors = Mirrors(config.proxy.all_upstreams(), config.proxy.maxdownloads)
    app[MIRRORS] = mirrors
    metrics = app.get(METRICS)
    if metrics is not None:
        for mirror in mirrors.mirrors:
            mirror.on_stale = metrics.proxy_stale.labels(mirror.prefix or "/").inc
    expiry = None
    policies = mirror_retention_policies(config)
    ttls = [u.ttl.total_seconds() for u in config.proxy.all_upstreams() if u.ttl]
    upkeep: bool = app[MAINTENANCE] and not config.storage.maintenance.readonly.enabled
    if ttls and upkeep:
        # Checked several times per ttl, at least hourly: a tag outlives it by little.
        interval = min(3600.0, min(ttls) / 4)
        expiry = asyncio.create_task(apply_periodically(app[STORAGE], policies, interval))
    yield
    if expiry is not None:
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
    await mirrors.close()
