"""The access log of both services: one line per request, with Distribution's field names.

aiohttp calls :class:`AccessLogger` once each response is sent (so the bytes written are
known), for every request the server answers, those its parser refused included. The
line's message is ``response completed``, as Distribution's; its fields:

``http.request.id``, ``http.request.method``, ``http.request.uri`` (the path, without the
query string, which may carry an upload's signed state), ``http.request.route`` (the
route's name), ``http.request.remoteaddr`` (the client's address, see
:mod:`shared.client_address`), ``http.request.host``, ``http.request.useragent``,
``http.response.status``, ``http.response.written`` (body bytes), ``http.response.duration``
(Go's duration notation, as Distribution writes it) and what the service adds for the
request with :func:`add_log_fields` (the registry: ``vars.name``, the repository).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from shared.client_address import client_address
from shared.log_format import FIELDS_ATTRIBUTE
from shared.request_context import REQUEST_ID

LOG_FIELDS = web.RequestKey("log_fields", dict[str, Any])
MAX_FIELD = 1024  # a path or user agent is the client's to make as long as the server allows


def add_log_fields(request: web.Request, fields: dict[str, Any]) -> None:
    """Fields to add to ``request``'s access line (later ones win)."""
    request.setdefault(LOG_FIELDS, {}).update(fields)


def go_duration(seconds: float) -> str:
    """``1.234ms``, ``12.5µs``, ``2.1s``: how Go (and so Distribution) writes a duration."""
    if seconds >= 1:
        return f"{seconds:.6g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.6g}ms"
    return f"{seconds * 1e6:.6g}µs"


def _clip(value: str) -> str:
    return value if len(value) <= MAX_FIELD else value[:MAX_FIELD] + "…"


def _route(request: BaseRequest) -> str:
    # Only a request that reached the app (it has an id then) was matched to a route.
    if isinstance(request, web.Request) and REQUEST_ID in request:
        resource = request.match_info.route.resource
        if resource is not None:
            return resource.canonical
    return ""


def body_bytes(request: BaseRequest, response: web.StreamResponse) -> int:
    """The body bytes sent: aiohttp counts the status line and headers in ``body_length``,
    so their size (as aiohttp serializes them: ``name: value\\r\\n`` each) is taken off."""
    head = len(response.reason) + 17  # "HTTP/1.1 200 " + reason + CRLF, and the final CRLF
    for name, value in response.headers.items():
        head += len(name) + 4 + (len(value) if value.isascii() else len(value.encode()))
    return max(0, response.body_length - head)


class AccessLogger(AbstractAccessLogger):
    """Writes each request's line on ``self.logger`` (``access_log_class`` of the servers)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        try:
            fields: dict[str, Any] = {
                # None for a request the parser refused: it never reached the app.
                "http.request.id": request.get(REQUEST_ID),
                "http.request.method": request.method,
                "http.request.uri": _clip(request.rel_url.raw_path),
                "http.request.route": _route(request),
                "http.request.remoteaddr": client_address(request) or "",
                "http.request.host": _clip(request.headers.get("Host", "")),
                "http.request.useragent": _clip(request.headers.get("User-Agent", "")),
                "http.response.status": response.status,
                "http.response.written": body_bytes(request, response),
                "http.response.duration": go_duration(time),
            }
            fields.update(request.get(LOG_FIELDS, {}))
            # The record made directly: Logger.info's argument handling is work the loop
            # does once per request for nothing (no caller, no arguments, no extra keys).
            record = logging.LogRecord(
                self.logger.name, logging.INFO, "", 0, "response completed", None, None
            )
            setattr(record, FIELDS_ATTRIBUTE, fields)
            self.logger.handle(record)
        except Exception:  # as aiohttp's own access logger: a line is never worth a request
            self.logger.exception("could not write an access log line")
