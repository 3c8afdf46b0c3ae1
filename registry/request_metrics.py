"""The middleware that counts and times every request of the registry app, by route name.

It is the outermost middleware, so it sees the status the error middleware rendered, and
it is installed only when ``http.debug.prometheus.enabled``: without metrics, no cost.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from registry.keys import ROUTE
from registry.metrics import RegistryMetrics, method_label

# A request cut short: the client hung up, or a blob transfer broke after its status line
# (nginx's convention; no response reached the client).
CLIENT_CLOSED = 499
# Requests the route table did not resolve (a bad name, an unknown path) share one label.
UNRESOLVED = "unknown"
_APP_ROUTES = {"get_root": "root", "get_base": "base"}


def route_label(request: web.Request) -> str:
    """The route *name* of a request (``manifest``, ``blob``, ``upload``...), never its
    path: a label per path would let clients grow the scrape without bound."""
    try:
        return str(request[ROUTE].resource)
    except KeyError:
        pass
    handler = request.match_info.route.handler
    return _APP_ROUTES.get(getattr(handler, "__name__", ""), UNRESOLVED)


def _sent(request: web.Request, response: web.StreamResponse) -> int:
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    # Declared lengths count blobs sent with sendfile, which bypasses aiohttp's writer.
    length = response.content_length
    return response.body_length if length is None else length


def metrics_middleware(metrics: RegistryMetrics) -> Middleware:
    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        metrics.serving += 1
        started = time.perf_counter()
        status = 500
        response = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:  # redirects (the error middleware renders >= 400)
            status = error.status
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.serving -= 1
            metrics.request(
                route_label(request),
                method_label(request.method),
                str(status),
                elapsed,
                getattr(request.content, "total_bytes", 0),
                _sent(request, response) if response is not None else 0,
            )

    return count_requests
