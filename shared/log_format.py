"""The three log line formats of ``log.formatter`` (``text``, ``json``, ``logstash``), as
Distribution writes them with logrus, and the fields every line carries.

A record's structured fields are the dict in its ``fields`` attribute (``extra={"fields":
...}``), merged over the configured static ``log.fields`` and over the request id of the
request being served (``http.request.id``, see :mod:`shared.request_context`). Field names
are Distribution's (``http.request.method``, ``http.response.status``, ``vars.name`` ...)
so that pipelines built for ``registry:2`` read these lines unchanged.

- ``json``: logrus's JSONFormatter: one object per line with ``time`` (RFC 3339 UTC),
  ``level`` (lower case, as logrus names it), ``msg`` and the fields at the top level.
- ``logstash``: logrus-logstash-hook's formatter: ``@timestamp``, ``@version`` ``"1"``,
  ``level``, ``message`` and the fields.
- ``text``: portside's line as before (time, LEVEL, logger, message) followed by the fields
  as logrus's text formatter writes them, ``key=value`` with values quoted when needed.

The stdlib's :mod:`json` does the encoding: a JSON library (python-json-logger) would save
no code here, since logrus's key names, lower-case levels and field merging would all have
to be configured or overridden in it anyway. A field a client controls is never trusted to
keep a line whole: JSON escapes it, and the text format quotes it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from json import encoder as json_encoder
from typing import Any

FORMATTERS = ("text", "json", "logstash")
TEXT_LAYOUT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Records' attribute carrying their structured fields.
FIELDS_ATTRIBUTE = "fields"
# logrus's level names (CRITICAL has no twin there: "fatal" is the nearest).
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record`` (its own and the request id it was logged under)."""
    fields: dict[str, Any] = {}
    request_id = getattr(record, "request_id", None)
    if request_id:
        fields["http.request.id"] = request_id
    own = getattr(record, FIELDS_ATTRIBUTE, None)
    if isinstance(own, Mapping):
        fields.update({key: value for key, value in own.items() if value is not None})
    return fields


def _level(record: logging.LogRecord) -> str:
    return _LEVELS.get(record.levelno, record.levelname.lower())


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The last second's text: a busy server writes many lines a second, and building a
# datetime for each cost more than the rest of a JSON line's head. (second, "...:SS.")
_LAST_SECOND: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """What :func:`_rfc3339` writes for ``created``, its second's text made once a second."""
    global _LAST_SECOND
    second = int(created)
    # As datetime.fromtimestamp: the fraction is rounded to microseconds (half to even),
    # which may carry into the next second; isoformat then truncates to milliseconds.
    micros = round((created - second) * 1e6)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    cached_second, head = _LAST_SECOND
    if second != cached_second:
        head = _rfc3339(second)[:-4]  # "YYYY-MM-DDTHH:MM:SS." of ".000Z"
        _LAST_SECOND = (second, head)
    return f"{head}{micros // 1000:03d}Z"


_PROBE = {"s": 'q"\u2028µ\n', "i": 1, "f": 0.5, "b": True, "n": None, "l": [1, "x"], "o": {1: 2}}


def _line_encoder() -> Callable[[dict[str, Any]], str]:
    """``JSONEncoder(ensure_ascii=False, default=str).encode`` for a line's dict.

    That method builds a C encoder object for each call (json.dumps with options builds
    the JSONEncoder too): half of what encoding an access line cost. The C encoder is
    built here once, with the same options and no check for circular references (a
    line's values are strings, numbers and config values); where the interpreter has no
    such encoder, or it does not write what the method writes, the method is used.
    """
    encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return encode
    try:
        iterate = make(None, str, _quote, None, ": ", ", ", False, False, True)

        def encode_once(line: dict[str, Any]) -> str:
            return "".join(iterate(line, 0))

        if encode_once(_PROBE) == encode(_PROBE):
            return encode_once
    except TypeError:  # another interpreter's signature
        pass
    return encode


class _StructuredFormatter(logging.Formatter):
    """Shared by the JSON and logstash formats: the static fields, then the record's."""

    def __init__(self, static_fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.static_fields = dict(static_fields)
        self._encode = _line_encoder()

    def _head(self, created: float, level: str, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        head = self._head(record.created, _level(record), record.getMessage())
        own = _plain_fields(record)
        if own is None or record.exc_info:
            line = {**head, **self.static_fields, **record_fields(record)}
            line.setdefault("logger", record.name)
            if record.exc_info:
                line["error"] = self.formatException(record.exc_info)
            return self._encode(line)
        return self._fields_line(head, record.name, own)

    def info_line(self, name: str, created: float, message: str, fields: Mapping[str, Any]) -> str:
        """What :meth:`format` writes for an INFO record of logger ``name`` made at
        ``created`` with ``message`` and its own ``fields`` (no traceback, no request id
        stamped on it), made without the record."""
        head = self._head(created, "info", message)
        return self._fields_line(head, name, fields)

    def _fields_line(self, head: dict[str, Any], name: str, own: Mapping[str, Any]) -> str:
        line = {**head, **self.static_fields}
        for key, value in own.items():  # as record_fields would, without a dict in between
            if value is not None:
                line[key] = value
        line.setdefault("logger", name)
        return self._encode(line)


class JsonFormatter(_StructuredFormatter):
    """logrus's JSONFormatter: ``time``, ``level``, ``msg`` and the fields."""

    def _head(self, created: float, level: str, message: str) -> dict[str, Any]:
        return {"time": _timestamp(created), "level": level, "msg": message}


class LogstashFormatter(_StructuredFormatter):
    """logrus-logstash-hook's formatter: ``@timestamp``, ``@version``, ``message``, ``level``."""

    def _head(self, created: float, level: str, message: str) -> dict[str, Any]:
        return {
            "@timestamp": _timestamp(created),
            "@version": "1",
            "level": level,
            "message": message,
        }


# As logrus quotes: anything but a plain token is written as a JSON string, so spaces,
# quotes and line breaks a client sent can never forge a field or a line.
_PLAIN = re.compile(r"[\w\-./@^+:]+", re.ASCII)


# What ``json.dumps(text, ensure_ascii=False)`` returns for a string, without the encoder
# object json.dumps builds on every call that passes it a non-default option.
_quote = json_encoder.encode_basestring


# Texts already written, as written: most of a busy server's field values repeat line
# after line (method, route, host, user agent, address). Bounded, as the values are the
# clients' to vary: short texts only, and past the bound it starts over.
_WRITTEN: dict[str, str] = {}
_WRITTEN_KEPT = 4096
_WRITTEN_LONGEST = 256


def _text(text: str) -> str:
    written = _WRITTEN.get(text)
    if written is None:
        written = text if _PLAIN.fullmatch(text) else _quote(text)
        if len(text) <= _WRITTEN_LONGEST:
            if len(_WRITTEN) >= _WRITTEN_KEPT:
                _WRITTEN.clear()
            _WRITTEN[text] = written
    return written


def _text_once(text: str) -> str:
    """What :func:`_text` writes, for a text that never repeats (a request id, a
    duration): not remembered, where it would only push out the texts that do repeat."""
    # ASCII letters, digits and hyphens (a UUID, every id the services make) are plain,
    # known so by two string methods: the regular expression's match cost five times as
    # many instructions, on every access line.
    if text.isascii() and text.replace("-", "").isalnum():
        return text
    return text if _PLAIN.fullmatch(text) else _quote(text)


def _text_value(value: Any) -> str:
    """A field's value as the text format writes it."""
    kind = type(value)
    if kind is str:
        return _text(value)
    if kind is int:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return _text(json.dumps(value, default=str))
    return _text(str(value))


def _plain_fields(record: logging.LogRecord) -> Mapping[str, Any] | None:
    """The record's own fields when they are all its line has (no request id stamped on
    it: an access line carries its own), else None: the fast paths read them as they are,
    without merging them into a new dict."""
    own = getattr(record, FIELDS_ATTRIBUTE, None)
    if type(own) is dict and not getattr(record, "request_id", None):
        return own
    return None


# ",000" to ",999": a line's milliseconds after its seconds, as "%s,%03d" writes them.
_MILLIS = tuple(f",{millis:03d}" for millis in range(1000))


class TextFormatter(logging.Formatter):
    """Time, level, logger and message, then ``key=value`` fields."""

    def __init__(self, static_fields: Mapping[str, Any]) -> None:
        super().__init__(TEXT_LAYOUT)
        self.static_fields = dict(static_fields)
        # Static fields never change: their text is made once, and prefixes any line
        # whose own fields do not override one of them.
        self._static_text = " ".join(f"{k}={_text_value(v)}" for k, v in self.static_fields.items())
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        # A busy server writes many lines a second: the seconds' text is made once each,
        # and the milliseconds' are made once for all (int.__format__ per line cost a
        # twentieth of an access line).
        second = int(created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
        millis = int(msecs)
        return self._second[1] + (_MILLIS[millis] if 0 <= millis < 1000 else f",{millis:03d}")

    def format(self, record: logging.LogRecord) -> str:
        own = _plain_fields(record)
        if (
            own is not None
            and record.exc_info is None
            and not record.exc_text
            and record.stack_info is None
            and (not self.static_fields or self.static_fields.keys().isdisjoint(own))
        ):
            when = self.formatTime(record)
            return self._fast(when, record.levelname, record.name, record.getMessage(), own)
        line = super().format(record)
        fields = {**self.static_fields, **record_fields(record)}
        if not fields:
            return line
        pairs = " ".join([f"{key}={_text_value(value)}" for key, value in fields.items()])
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {pairs}{newline}{rest}"

    def info_line(self, name: str, created: float, message: str, fields: Mapping[str, Any]) -> str:
        """What :meth:`format` writes for an INFO record of logger ``name`` made at
        ``created`` with ``message`` and its own ``fields`` (no traceback, no request id
        stamped on it), made without the record."""
        when = self._time(created, (created - int(created)) * 1000)  # LogRecord's msecs
        if self.static_fields and not self.static_fields.keys().isdisjoint(fields):
            merged = {**self.static_fields}
            merged.update({key: value for key, value in fields.items() if value is not None})
            pairs = " ".join([f"{key}={_text_value(value)}" for key, value in merged.items()])
            return f"{when} INFO {name} {message} {pairs}"
        return self._fast(when, "INFO", name, message, fields)

    def info_head(self, name: str, created: float, message: str) -> str:
        """The start of :meth:`info_line`'s line, before any field: time, level, logger
        and message, then the static fields' text when there are some (the caller checks
        with :meth:`keeps_static_apart` that its fields override none of them)."""
        when = self._time(created, (created - int(created)) * 1000)  # LogRecord's msecs
        head = f"{when} INFO {name} {message}"
        return f"{head} {self._static_text}" if self._static_text else head

    def keeps_static_apart(self, keys: Iterable[str]) -> bool:
        """Whether fields named ``keys`` override no static field: then a line is
        :meth:`info_head` and the fields' ``key=value`` pairs, as :meth:`info_line` writes
        it (else it merges them)."""
        return not self.static_fields or self.static_fields.keys().isdisjoint(keys)

    def _fast(self, when: str, level: str, name: str, message: str, own: Mapping[str, Any]) -> str:
        # The line super().format and the merge above make, for a record with no
        # traceback whose fields need no merging: what most lines, access lines, are.
        pairs = [self._static_text] if self._static_text else []
        written = _WRITTEN
        for key, value in own.items():
            if value is None:
                continue
            kind = type(value)
            if kind is str:
                text = written.get(value) or _text(value)
            elif kind is int:
                text = str(value)
            else:
                text = _text_value(value)
            pairs.append(f"{key}={text}")
        head = f"{when} {level} {name} {message}"
        return f"{head} {' '.join(pairs)}" if pairs else head


LineFormatter = TextFormatter | JsonFormatter | LogstashFormatter
# How the text format writes a field's value: any value, and a string (remembered).
text_value = _text_value
text_of_string = _text
text_of_unique_string = _text_once


def make_formatter(name: str, static_fields: Mapping[str, Any]) -> LineFormatter:
    """The formatter ``log.formatter`` names, with ``log.fields`` on every line."""
    if name == "json":
        return JsonFormatter(static_fields)
    if name == "logstash":
        return LogstashFormatter(static_fields)
    if name == "text":
        return TextFormatter(static_fields)
    raise ValueError(f"unknown log formatter {name!r}; expected one of {', '.join(FORMATTERS)}")
