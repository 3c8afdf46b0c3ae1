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

With the services' own log set-up (``shared.log_queue.DirectLines``) no record is made at
all: the event loop captures the request's values (plain values, read while they are in
its cache) and queues them; the log writer's thread (:mod:`shared.log_queue`) hands them
to the log child (:mod:`shared.log_child`), a process of its own, which makes the line
(:func:`shared.access_text.access_line`) and writes it, off the serving process's
interpreter lock. Without a child (an output that is no file descriptor), the loop makes
the line at once and queues its text, and the writer thread only writes it: rendered on
that thread instead, a line cost three to four times what it costs on the loop, and that
thread shares the interpreter lock with the loop
(docs/performance.md#per-request-overhead). With any
other set-up (a handler added by a test or an embedding program) the values go as an
:class:`AccessRecord` through the logging machinery, whose fields are worked out when it
is formatted. All write the same line (:mod:`shared.access_text`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import time as now
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from shared import log_queue
from shared.access_text import (
    MESSAGE,
    ROUTE_FIELD,
    Captured,
    access_fields,
    access_line,
)
from shared.client_address import client_address
from shared.request_context import REQUEST_ID

LOG_FIELDS = web.RequestKey("log_fields", dict[str, Any])


def add_log_fields(request: web.Request, fields: dict[str, Any]) -> None:
    """Fields to add to ``request``'s access line (later ones win)."""
    request.setdefault(LOG_FIELDS, {}).update(fields)


def _route(request: BaseRequest, request_id: str | None) -> str:
    # Only a request that reached the app (it has an id then) was matched to a route.
    if request_id is not None and isinstance(request, web.Request):
        resource = request.match_info.route.resource
        if resource is not None:
            return resource.canonical
    return ""


def body_bytes(reason: str, headers: Mapping[str, str], body_length: int) -> int:
    """The body bytes of a response sent: aiohttp counts the status line and headers in
    ``body_length``, so their size (as aiohttp serializes them: ``name: value\\r\\n`` each)
    is taken off."""
    # "HTTP/1.1 200 " + reason + CRLF, and the final CRLF; then ": " and CRLF per header.
    # Joined once (names and values in one join: a fifth cheaper than two), they are
    # measured in C rather than one by one.
    head = len(reason) + 17 + 4 * len(headers)
    head += len("".join([*headers.keys(), *headers.values()]).encode())
    return max(0, body_length - head)


# What a LogRecord holds that an access line never varies: set on each record at once.
_CONSTANT_ATTRIBUTES: dict[str, Any] = {
    "msg": MESSAGE,
    "args": None,
    "levelname": "INFO",
    "levelno": logging.INFO,
    "pathname": "",
    "filename": "",
    "module": "",
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "lineno": 0,
    "funcName": None,
    "thread": None,
    "threadName": None,
    "processName": None,
    "process": None,
    "taskName": None,
}


class AccessRecord(logging.LogRecord):
    """One access line as a log record whose fields are worked out when first read.

    A record is made on the event loop for every request: it captures the values that
    belong to the moment (the request's id, address, host and user agent, the response's
    status and body size, the duration), and its ``fields`` attribute (the structured fields
    :mod:`shared.log_format` writes) turns them into the line's fields on whichever thread
    formats the record, usually the log writer's. Every standard record attribute is
    there, so any handler or formatter reads it as it would any record.
    """

    def __init__(
        self,
        name: str,
        request: BaseRequest,
        response: web.StreamResponse,
        duration: float,
        request_id: str | None,
        extra: dict[str, Any] | None,
    ) -> None:
        # LogRecord.__init__ is not called: it looks up what an access line has no use for.
        self.__dict__.update(_CONSTANT_ATTRIBUTES)
        self.name = name
        created = now()
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        self._captured = _capture(request, response, duration, request_id, extra)
        self._fields: dict[str, Any] | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """The line's structured fields, made at the first read (the attribute is
        :data:`shared.log_format.FIELDS_ATTRIBUTE`, which formatters read)."""
        if self._fields is None:
            self._fields = access_fields(*self._captured)
        return self._fields


def _capture(
    request: BaseRequest,
    response: web.StreamResponse,
    duration: float,
    request_id: str | None,
    extra: dict[str, Any] | None,
) -> Captured:
    """What an access line needs of the moment it is logged (:func:`access_fields`).

    Plain values only, read now: the request's and response's header maps are let go with
    the request, on the event loop, while they are warm. Held for the writer's window
    instead, they were read (and freed) there up to 20 ms later, out of cache.
    """
    headers = request.headers
    # A route the service names (the registry, on /v2/) wins over the router's.
    named = extra is not None and ROUTE_FIELD in extra
    route = "" if named else _route(request, request_id)
    # The body bytes sent: a web.Response (not a subclass: an HTTPException renders its
    # own) whose end was written wrote its body whole in that one write, or none for a
    # HEAD, 1xx, 204 or 304, or without a body; a body compressed in place went out
    # compressed. Read off aiohttp's state, that is what body_bytes works out from the
    # head (a tenth of a manifest GET's access line), in a few attribute reads. Anything
    # else (a stream, a payload object, an end not written, chunked) is measured. No
    # handler writes into a web.Response itself: streams are StreamResponses.
    if type(response) is web.Response and response._eof_sent and not response._chunked:
        body: object = response._compressed_body
        if body is None:
            body = response._body
        if response._must_be_empty_body or body is None:
            written = 0
        elif type(body) is bytes:
            written = len(body)
        else:
            written = body_bytes(response.reason, response.headers, response.body_length)
    else:
        written = body_bytes(response.reason, response.headers, response.body_length)
    return (
        request_id,
        request.method,
        request.rel_url.raw_path,
        route,
        client_address(request) or "",  # the address may not outlive the connection
        headers.get("Host", ""),
        headers.get("User-Agent", ""),
        response.status,
        written,
        duration,
        extra,
    )


class AccessLogger(AbstractAccessLogger):
    """Writes each request's line on ``self.logger`` (``access_log_class`` of the servers)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        try:
            # request[...] rather than request.get(...): Mapping.get is one more Python
            # call (it reads request[...] itself), on every line.
            try:
                request_id: str | None = request[REQUEST_ID]
                extra = request[LOG_FIELDS]
            except KeyError:  # not named (refused by the parser), or no fields of its own
                request_id, extra = request.get(REQUEST_ID), None
            direct = log_queue.direct_lines
            if direct is not None and direct.route(logger):
                # No record: the line is made now, while what it reads is warm, and only
                # its text goes to the writer's queue.
                captured = _capture(request, response, time, request_id, extra)
                if direct.apart:  # a log child makes the line, off this interpreter
                    direct.put((logger.name, now(), captured))
                else:
                    direct.put(access_line(direct.formatter, logger.name, now(), captured))
                return
            record = AccessRecord(logger.name, request, response, time, request_id, extra)
            logger.handle(record)
        except Exception:  # as aiohttp's own access logger: a line is never worth a request
            self.logger.exception("could not write an access log line")
