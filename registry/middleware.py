"""Middlewares and signals around every handler: the error envelope and standard headers.

Handlers raise; this is the one place that turns any failure into the spec's JSON
envelope with its status, so a client never sees a traceback or a bare 500 page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from registry.storage.errors import DriverError, StorageError, StorageFull
from registry.storage_errors import registry_error
from shared import errors
from shared.errors import ErrorCode, RegistryError, error_body

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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as error:
        return render_error(error)
    except (StorageError, DriverError) as error:
        mapped = registry_error(error)
        if mapped is None:
            log.exception("storage failed in %s %s", request.method, request.rel_url.path)
            mapped = RegistryError(errors.UNKNOWN)
        elif isinstance(error, StorageFull):
            # The operator must learn it from the log too; the path is the driver's.
            log.error("%s %s failed: %s", request.method, request.rel_url.path, error)
        return render_error(mapped)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        code = _HTTP_STATUS_CODES.get(http_error.status, errors.UNKNOWN)
        return render_error(RegistryError(code, http_error.reason, status=http_error.status))
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.rel_url.path)
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
    """An ``on_response_prepare`` callback adding the API version header to every /v2/
    response (errors and streamed blobs included) and the configured ``http.headers``."""

    async def set_headers(request: web.Request, response: web.StreamResponse) -> None:
        if "/v2" in request.rel_url.raw_path:
            response.headers[API_VERSION_HEADER] = "registry/2.0"
        for name, values in extra.items():
            if name not in response.headers:
                response.headers[name] = ", ".join(values)

    return set_headers
