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
all: the event loop captures the request's values and makes the line from them at once
(:func:`access_line`), while they are in its cache, and queues the text; the log writer's
thread (:mod:`shared.log_queue`) only writes it. Rendered on the writer instead, a line
cost that thread three to four times what it costs on the loop, and that thread shares the
interpreter lock with the loop (docs/performance.md#per-request-overhead). With any
other set-up (a handler added by a test or an embedding program) the values go as an
:class:`AccessRecord` through the logging machinery, whose fields are worked out when it
is formatted. Both write the same line; in the text format an access line is written
straight from the captured values, without its dict of fields (:func:`_text_line`),
again the same line.
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
from shared.client_address import client_address
from shared.log_format import (
    LineFormatter,
    TextFormatter,
    text_of_string,
    text_of_unique_string,
    text_value,
)
from shared.request_context import REQUEST_ID

LOG_FIELDS = web.RequestKey("log_fields", dict[str, Any])
MAX_FIELD = 1024  # a path or user agent is the client's to make as long as the server allows
MESSAGE = "response completed"


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


def _duration_text(seconds: float) -> str:
    """How the text format writes ``go_duration(seconds)``, without asking its regular
    expression (``text_of_unique_string``, a call and a match per line): below a
    millisecond the unit is ``µs``, not a plain token's character, so it is quoted (a
    duration has no quote or backslash to escape); above, it is digits, ``.``, ``e``,
    ``+`` and ``ms`` or ``s``: plain."""
    text = go_duration(seconds)
    return f'"{text}"' if seconds < 1e-3 or seconds != seconds else text  # NaN: "nanµs"


def _clip(value: str) -> str:
    return value if len(value) <= MAX_FIELD else value[:MAX_FIELD] + "…"


# The standard field a service may fill itself (add_log_fields): its value replaces the
# router's resource, which is then not looked up (five attribute reads per line).
ROUTE_FIELD = "http.request.route"


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


# (request id, method, path, route, address, host, user agent, status, body bytes written,
# duration, the service's fields): plain values only, see _capture.
Captured = tuple[
    str | None, str, str, str, str, str, str, int, int, float, dict[str, Any] | None
]  # fmt: skip


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


# The fields every access line has, in order (then the service's own).
ACCESS_FIELDS = (
    "http.request.id",
    "http.request.method",
    "http.request.uri",
    "http.request.route",
    "http.request.remoteaddr",
    "http.request.host",
    "http.request.useragent",
    "http.response.status",
    "http.response.written",
    "http.response.duration",
)
_ACCESS_FIELDS = frozenset(ACCESS_FIELDS)
# Service field values whose text a remembered line may stand for: equal values of one
# of these types are written alike.
_KEYED_TYPES = frozenset({str, int, bool, type(None)})


def access_line(formatter: LineFormatter, name: str, created: float, captured: Captured) -> str:
    """The access line of logger ``name`` made at ``created`` from the ``captured`` values,
    as ``formatter`` writes it (without the terminator): what formatting its
    :class:`AccessRecord` writes."""
    if type(formatter) is TextFormatter:
        line = _text_line(formatter, name, created, captured)
        if line is not None:
            return line
    return formatter.info_line(name, created, MESSAGE, access_fields(*captured))


def _text_line(
    formatter: TextFormatter, name: str, created: float, captured: Captured
) -> str | None:
    """What ``formatter.info_line`` writes for the line's fields, written straight from the
    captured values (no dict of fields, no per-field type dispatch: a third of the text
    line's cost); None when a field would override another that this does not merge (a
    static ``log.fields`` key, or a service field named as the request id or duration)."""
    rid, method, path, route, address, host, agent, status, written, duration, extra = captured
    if extra and not _UNIQUE_FIELDS.isdisjoint(extra):
        return None
    if formatter.static_fields and (  # most set-ups have no log.fields: no calls then
        not formatter.keeps_static_apart(_ACCESS_FIELDS)
        or (extra and not formatter.keeps_static_apart(extra))
    ):
        return None
    head = formatter.info_head(name, created, MESSAGE)
    duration_text = _duration_text(duration)
    # What varies from line to line is the id and the duration; the rest of a busy
    # server's lines repeats (the same few requests, clients and answers), so its text is
    # remembered by the values it is made of (:func:`_repeated_text`).
    key: tuple[Any, ...] = (method, path, route, address, host, agent, status, written)
    if extra and not _KEYED_TYPES.issuperset(map(type, extra.values())):  # in C
        # Equal values written apart (0.0 and -0.0, (True,) and (1,)) would share a
        # key: such a line is made anew.
        middle, tail = _repeated_parts(captured)
    else:
        if extra:  # with the values' types: 1 and True are equal keys, written apart
            key += (*extra.items(), *map(type, extra.values()))
        middle, tail = _REPEATED.get(key) or _repeated_text(key, captured)
    if rid is None:  # a request the parser refused has none
        return f"{head} {middle}http.response.duration={duration_text}{tail}"
    rid_text = text_of_unique_string(rid)
    return f"{head} http.request.id={rid_text} {middle}http.response.duration={duration_text}{tail}"


# The standard fields whose values never repeat: a service field named as one is left to
# the formatter's merge.
_UNIQUE_FIELDS = frozenset({"http.request.id", "http.response.duration"})

# The text of the repeated fields of recent access lines, by the values they were made of:
# (from method to bytes written, the service's fields). Bounded, as the values are the
# clients' to vary: short texts only, and past the bound it starts over.
_REPEATED: dict[tuple[Any, ...], tuple[str, str]] = {}
_REPEATED_KEPT = 1024
_REPEATED_LONGEST = 1024


def _repeated_text(key: tuple[Any, ...], captured: Captured) -> tuple[str, str]:
    parts = _repeated_parts(captured)
    if len(parts[0]) + len(parts[1]) <= _REPEATED_LONGEST:
        if len(_REPEATED) >= _REPEATED_KEPT:
            _REPEATED.clear()
        _REPEATED[key] = parts
    return parts


def _repeated_parts(captured: Captured) -> tuple[str, str]:
    """The text of an access line's fields from its method to its bytes written (with its
    trailing space, remembered with it rather than added to each line), and that of the
    service's other fields after its duration (with its leading space).

    A service field named as one of the standard ones takes its place with its own value
    (the registry names the route, and the bytes a sendfile sent), as merging the fields
    into one dict would; a None value leaves the field out."""
    _, method, path, route, address, host, agent, status, written, _, extra = captured
    text = text_of_string
    standard: list[tuple[str, str | None]] = [
        ("http.request.method", text(method)),
        ("http.request.uri", text(_clip(path))),
        ("http.request.route", text(route)),
        ("http.request.remoteaddr", text(address)),
        ("http.request.host", text(_clip(host))),
        ("http.request.useragent", text(_clip(agent))),
        ("http.response.status", str(status)),
        ("http.response.written", str(written)),
    ]
    if not extra:
        return "".join([f"{key}={value} " for key, value in standard]), ""
    fields = []
    for key, value in standard:
        if key in extra:
            given = extra[key]
            value = None if given is None else text_value(given)
        if value is not None:
            fields.append(f"{key}={value} ")
    others = [
        f" {key}={text_value(value)}"
        for key, value in extra.items()
        if value is not None and key not in _ACCESS_FIELDS
    ]
    return "".join(fields), "".join(others)


def access_fields(
    request_id: str | None,
    method: str,
    path: str,
    route: str,
    address: str,
    host: str,
    agent: str,
    status: int,
    written: int,
    duration: float,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """An access line's structured fields, from the values captured when it was sent."""
    fields: dict[str, Any] = {
        # None for a request the parser refused: it never reached the app.
        "http.request.id": request_id,
        "http.request.method": method,
        "http.request.uri": _clip(path),
        "http.request.route": route,
        "http.request.remoteaddr": address,
        "http.request.host": _clip(host),
        "http.request.useragent": _clip(agent),
        "http.response.status": status,
        "http.response.written": written,
        "http.response.duration": go_duration(duration),
    }
    if extra:
        fields.update(extra)
    return fields


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
                direct.put(access_line(direct.formatter, logger.name, now(), captured))
                return
            record = AccessRecord(logger.name, request, response, time, request_id, extra)
            logger.handle(record)
        except Exception:  # as aiohttp's own access logger: a line is never worth a request
            self.logger.exception("could not write an access log line")
