"""The middleware and signal around every handler: request id, metrics, the error
envelope and standard headers.

Handlers raise; this is the one place that turns any failure into the spec's JSON
envelope with its status, so a client never sees a traceback or a bare 500 page.

What every request needs before and after its handler is one middleware,
:func:`request_middleware`, and what every response needs is one ``on_response_prepare``
callback, :func:`header_setter`: aiohttp runs each middleware and each callback as a
coroutine of its own, so the request id, the metrics and the error rendering as three
middlewares (and two header callbacks) cost three frames and two awaits more per request
than doing them in one (docs/performance.md#per-request-overhead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from registry.metrics import RegistryMetrics
from registry.request_metrics import CLIENT_CLOSED, count_request
from registry.storage.errors import DriverError, StorageError, StorageFull
from registry.storage_errors import registry_error
from shared import errors
from shared.errors import ErrorCode, RegistryError, error_body
from shared.networks import IPNetwork
from shared.request_context import REQUEST_ID, REQUEST_ID_HEADER, enter_request
from shared.request_id import current_request_id

log = logging.getLogger("registry")

API_VERSION_HEADER = "Docker-Distribution-API-Version"

# aiohttp's own HTTP errors (malformed requests, 404 routes, 405) mapped to spec codes.
_HTTP_STATUS_CODES: dict[int, ErrorCode] = {
    400: errors.BLOB_UPLOAD_INVALID,
    404: errors.UNSUPPORTED,
    405: errors.UNSUPPORTED,
    413: errors.SIZE_TOO_LARGE,
    416: errors.RANGE_INVALID,
}
# The code of a request aiohttp's parser refuses (shared.http_server answers those).
BAD_REQUEST = _HTTP_STATUS_CODES[400]


def request_middleware(
    trusted_proxies: Sequence[IPNetwork], metrics: RegistryMetrics | None
) -> Middleware:
    """The registry's outermost middleware: names the request and finds its client
    (:func:`shared.request_context.enter_request`), renders any failure of the handler as
    the spec's envelope (:func:`error_response`), and counts the request in ``metrics``
    (``http.debug.prometheus``, None when not served) with the status rendered."""

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = enter_request(request, trusted_proxies)
        if metrics is not None:
            metrics.serving += 1
        started = perf_counter()
        status = 500  # an exception that escapes unrendered (TimeoutError)
        response = None
        try:
            try:
                response = await handler(request)
            except Exception as error:  # error_response re-raises what it does not answer
                response = error_response(request, error)
            status = response.status
            return response
        except web.HTTPException as error:  # redirects (errors >= 400 were rendered)
            status = error.status
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            status = CLIENT_CLOSED
            raise
        finally:
            current_request_id.reset(token)
            if metrics is not None:
                metrics.serving -= 1
                count_request(metrics, request, response, status, perf_counter() - started)

    return serve


def error_response(request: web.Request, error: Exception) -> web.Response:
    """The envelope answering a handler's failure; re-raises what is not one to answer:
    a redirect, a client gone (``ConnectionResetError``), a timeout."""
    if isinstance(error, RegistryError):
        return render_error(error)
    if isinstance(error, StorageError | DriverError):
        mapped = registry_error(error)
        if mapped is None:
            log.error(
                "storage failed in %s %s",
                request.method,
                request.rel_url.path,
                exc_info=error,
            )
            mapped = RegistryError(errors.UNKNOWN)
        elif isinstance(error, StorageFull):
            # The operator must learn it from the log too; the path is the driver's.
            log.error("%s %s failed: %s", request.method, request.rel_url.path, error)
        return render_error(mapped)
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error
        code = _HTTP_STATUS_CODES.get(error.status, errors.UNKNOWN)
        return render_error(RegistryError(code, error.reason, status=error.status))
    if isinstance(error, ConnectionResetError | TimeoutError):
        raise error
    log.error("unhandled error in %s %s", request.method, request.rel_url.path, exc_info=error)
    return render_error(RegistryError(errors.UNKNOWN))


def render_error(error: RegistryError) -> web.Response:
    response = web.Response(
        status=error.status,
        body=error_body(error),
        content_type="application/json",
        headers=error.headers,
    )
    return response


def header_setter(
    extra: dict[str, list[str]],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The registry's ``on_response_prepare`` callback: names the request on every
    response (``X-Request-Id``, errors and streamed blobs included), adds the API version
    header to every /v2/ response and the configured ``http.headers``."""

    async def set_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        # request[...] rather than request.get(...): Mapping.get is one more Python call
        # (it reads request[...] itself), per response; contextlib.suppress two more.
        try:  # noqa: SIM105
            headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        except KeyError:
            pass
        if "/v2" in request.rel_url.raw_path:
            headers[API_VERSION_HEADER] = "registry/2.0"
        for name, values in extra.items():
            if name not in headers:
                headers[name] = ", ".join(values)

    return set_headers
