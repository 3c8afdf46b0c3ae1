"""The text of an access line, made from the values captured when its response was sent.

What :mod:`shared.access_log` captures of a request (:data:`Captured`: plain values only)
becomes a line here, in the configured format (:func:`access_line`), byte for byte what
formatting its record writes. Standard library and :mod:`shared.log_format` only: the log
writer's child process (:mod:`shared.log_child`) imports it to make the lines apart from
the event loop, and starts without aiohttp.
"""

from __future__ import annotations

from typing import Any

from shared.log_format import (
    LineFormatter,
    TextFormatter,
    text_of_string,
    text_of_unique_string,
    text_value,
)

MAX_FIELD = 1024  # a path or user agent is the client's to make as long as the server allows
MESSAGE = "response completed"


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


# (request id, method, path, route, address, host, user agent, status, body bytes written,
# duration, the service's fields): plain values only, see _capture.
Captured = tuple[
    str | None, str, str, str, str, str, str, int, int, float, dict[str, Any] | None
]  # fmt: skip


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
