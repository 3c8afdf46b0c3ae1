"""What the registry's metrics count of each request: its route name, method, status,
duration and bytes.

The registry's outermost middleware (:func:`registry.middleware.request_middleware`) calls
:func:`count_request` once a request is answered, with the status its error rendering
made, and only when ``http.debug.prometheus.enabled``: without metrics, no cost.
"""

from __future__ import annotations

from aiohttp import web

from registry.keys import ROUTE
from registry.metrics import METHODS, RegistryMetrics, method_label

# A request cut short: the client hung up, or a blob transfer broke after its status line
# (nginx's convention; no response reached the client).
CLIENT_CLOSED = 499
# Requests the route table did not resolve (a bad name, an unknown path) share one label.
UNRESOLVED = "unknown"
_APP_ROUTES = {"get_root": "root", "get_base": "base"}


def _unresolved_label(request: web.Request) -> str:
    """The route label of a request the route table did not resolve: the app's own
    routes' names, else :data:`UNRESOLVED`."""
    handler = request.match_info.route.handler
    return _APP_ROUTES.get(getattr(handler, "__name__", ""), UNRESOLVED)


def _sent(request: web.Request, response: web.StreamResponse) -> int:
    if request.method == "HEAD" or response.status in (204, 304):
        return 0
    if type(response) is web.Response:
        body = response._body
        if (
            type(body) is bytes
            and response._compressed_body is None
            and not response._chunked
            and "Content-Length" not in response._headers
        ):
            # What Response.content_length gives such a response, without its two Python
            # calls (the property, and an ABC's isinstance for a payload), per request.
            return len(body)
    # Declared lengths count blobs sent with sendfile, which bypasses aiohttp's writer.
    length = response.content_length
    return response.body_length if length is None else length


def count_request(
    metrics: RegistryMetrics,
    request: web.Request,
    response: web.StreamResponse | None,
    status: int,
    seconds: float,
) -> None:
    """Tally one request answered with ``status`` (:data:`CLIENT_CLOSED` for one cut
    short) after ``seconds``; ``response`` is None when none was made."""
    # The route *name* (``manifest``, ``blob``, ``upload``...), never its path: a label
    # per path would let clients grow the scrape without bound. Read here, and the
    # method's label too when it is a spec's method: two Python calls fewer per request.
    try:
        route = str(request[ROUTE].resource)
    except KeyError:
        route = _unresolved_label(request)
    method = request.method
    metrics.request(
        (route, method if method in METHODS else method_label(method), str(status)),
        seconds,
        getattr(request.content, "total_bytes", 0),
        _sent(request, response) if response is not None else 0,
    )
