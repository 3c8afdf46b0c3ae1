"""The debug listener (``http.debug.addr``): what operators and their tools read, served
apart from the API as Distribution does, so it is never exposed with it.

It carries the health endpoint and, when ``http.debug.prometheus.enabled``, the metrics
page. Each part adds its routes through :func:`create_debug_app`; the app it builds reaches
the serving registry app (its storage, its caches) through :data:`SERVED_APP`.
"""

from __future__ import annotations

import socket

from aiohttp import web

from registry.config import RegistryConfig, listen_host_port
from shared.listener import bind_sockets, display_address

# The registry app this debug app reports on (started before the debug app).
SERVED_APP = web.AppKey("served_app", web.Application)


def create_debug_app(config: RegistryConfig, served: web.Application) -> web.Application:
    """The debug app for ``served``, the registry app started from the same ``config``."""
    app = web.Application()
    app[SERVED_APP] = served
    return app


def bind_debug(config: RegistryConfig, *, reuse_port: bool = False) -> list[socket.socket]:
    """The sockets for ``http.debug.addr``; raises ListenError (one line naming it).

    With several workers every worker binds it with SO_REUSEPORT: any of them answers a
    scrape or a health check, and each speaks for all (see the metrics module).
    """
    host, port = listen_host_port(config.http.debug.addr)
    return bind_sockets(host, port, reuse_port=reuse_port)


def debug_address(config: RegistryConfig) -> str:
    return display_address(*listen_host_port(config.http.debug.addr))
