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
from registry.keys import CONFIG, MAINTENANCE, STORAGE
from registry.middleware import error_middleware, header_setter
from registry.routes import dispatch, get_base, get_root
from registry.storage.retention import apply_periodically
from registry.upload_state import UPLOAD_STATE, UploadStateSigner
from registry.urls import path_prefix
from registry.wiring import create_blob_descriptor_cache, create_storage, retention_policies
from shared import request_context


def create_app(
    config: RegistryConfig,
    *,
    maintenance: bool = True,
    controller: AccessController | None = None,
) -> web.Application:
    """The registry app; ``maintenance`` runs background upkeep (one worker per host).

    ``controller`` is the access controller ``registry serve`` already built from
    ``config`` to check it (so users files are read, and warned about, once); without it
    the one ``config`` names is built here.
    """
    middlewares: list[Middleware] = [error_middleware]
    controller = controller or create_access_controller(config)
    if controller is not None:
        middlewares.append(auth_middleware(controller))
    app = web.Application(middlewares=middlewares, handler_args={"max_field_size": 16384})
    request_context.install(app, config.http.trustedproxies)
    app[CONFIG] = config
    app[MAINTENANCE] = maintenance
    app[UPLOAD_STATE] = UploadStateSigner.from_config(config)
    app.cleanup_ctx.append(_storage_context)
    app.cleanup_ctx.append(_cache_context)
    if controller is not None:
        app.on_startup.append(lambda _: controller.start())
        app.on_cleanup.append(lambda _: controller.close())
    app.on_response_prepare.append(header_setter(config.http.headers))
    prefix = path_prefix(config)
    app.router.add_get("/", get_root)
    if prefix:
        app.router.add_get(prefix + "/", get_root)
    app.router.add_get(prefix + "/v2/", get_base)
    app.router.add_get(prefix + "/v2", get_base)
    app.router.add_route("*", prefix + "/v2/{tail:.+}", dispatch)
    return app


async def _storage_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    registry = create_storage(config)
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
    yield
    for task in (purger, flusher, applier):
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
    cache = create_blob_descriptor_cache(app[CONFIG])
    app[STORAGE].blob_store.cache = cache
    yield
    if cache is not None:
        await cache.close()
