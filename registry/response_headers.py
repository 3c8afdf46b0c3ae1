"""The headers every registry response carries: ``X-Request-Id`` (errors and streamed
blobs included), the API version header on ``/v2/`` responses, and the configured
``http.headers``.

They are set in one plain call, not in an ``on_response_prepare`` callback: aiohttp runs
a signal's callbacks as coroutines of their own (the signal's ``send`` and ours, about
five Python calls and two coroutine frames per response; docs/performance.md, "One step
for the response's headers"). The registry's middleware (:mod:`registry.middleware`)
sets them on every response it returns or passes on; a handler that sends its body
itself prepares its response with :func:`prepare`, which sets them first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from shared.request_context import REQUEST_ID, REQUEST_ID_HEADER

API_VERSION_HEADER = "Docker-Distribution-API-Version"

# Sets the standard headers of a response to the request given.
SetHeaders = Callable[[web.Request, web.StreamResponse], None]
# The app's setter, for the handlers that prepare their responses themselves.
RESPONSE_HEADERS: web.AppKey[SetHeaders] = web.AppKey("response_headers")


def response_headers(configured: Mapping[str, Sequence[str]]) -> SetHeaders:
    """The setter of an app whose ``http.headers`` are ``configured``: a configured header
    never replaces one the response already has."""
    # Joined once, not per response.
    extra = tuple((name, ", ".join(values)) for name, values in configured.items())

    def set_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        # request[...] rather than request.get(...): Mapping.get is one more Python call
        # (it reads request[...] itself), per response; contextlib.suppress two more.
        try:  # noqa: SIM105
            headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
        except KeyError:
            pass
        if "/v2" in request.rel_url.raw_path:
            headers[API_VERSION_HEADER] = "registry/2.0"
        for name, value in extra:
            if name not in headers:
                headers[name] = value

    return set_headers


async def prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``response.prepare(request)`` for a handler that sends its body itself, the standard
    headers set first (the middleware sees the response only once it is sent)."""
    request.app[RESPONSE_HEADERS](request, response)
    await response.prepare(request)
