"""The middleware around every handler: request id, metrics, the error envelope and
standard headers.

Handlers raise; this is the one place that turns any failure into the spec's JSON
envelope with its status, so a client never sees a traceback or a bare 500 page.

What every request needs before and after its handler is one middleware,
:func:`request_middleware`: aiohttp runs each middleware as a coroutine of its own, so the
request id, the metrics and the error rendering as three middlewares cost three frames
and two awaits more per request than doing them in one. It also sets each response's
standard headers (:mod:`registry.response_headers`), in one plain call rather than an
``on_response_prepare`` callback (docs/performance.md#per-request-overhead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from registry.metrics import RegistryMetrics
from registry.request_metrics import CLIENT_CLOSED, count_request
from registry.response_headers import SetHeaders
from registry.storage.errors import DriverError, StorageError, StorageFull
from registry.storage_errors import registry_error
from shared import errors
from shared.errors import ErrorCode, RegistryError, error_body
from shared.networks import IPNetwork
from shared.request_context import enter_request
from shared.request_id import current_request_id

log = logging.getLogger("registry")

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
    trusted_proxies: Sequence[IPNetwork],
    metrics: RegistryMetrics | None,
    set_headers: SetHeaders,
) -> Middleware:
    """The registry's outermost middleware: names the request and finds its client
    (:func:`shared.request_context.enter_request`), renders any failure of the handler as
    the spec's envelope (:func:`error_response`), sets the response's standard headers
    (``set_headers``, :func:`registry.response_headers.response_headers`) and counts the
    request in ``metrics`` (``http.debug.prometheus``, None when not served) with the
    status rendered."""

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = enter_request(request, trusted_proxies)
        if metrics is not None:
            metrics.serving += 1
        started = perf_counter()
        status = 500  # counted for what escapes unrendered, and for the 504 of a timeout
        response = None
        try:
            try:
                response = await handler(request)
            except Exception as error:  # error_response re-raises what it does not answer
                response = error_response(request, error)
            # Also on a response a handler sent itself, which prepare() gave the very same
            # headers: setting them again changes nothing, and costs less than asking
            # (StreamResponse.prepared is a Python property, per request).
            set_headers(request, response)
            status = response.status
            return response
        except web.HTTPException as error:  # redirects (errors >= 400 were rendered)
            status = error.status
            set_headers(request, error)
            raise
        except TimeoutError:
            # aiohttp answers a handler's timeout itself, with this very call, once the
            # middlewares are done; made here so that it carries the standard headers too.
            # Counted as before (500, no bytes): the tally never saw aiohttp's answer.
            answer = request.protocol.handle_error(request, 504)
            set_headers(request, answer)
            return answer
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
