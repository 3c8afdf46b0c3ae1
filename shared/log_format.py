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
from collections.abc import Mapping
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


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _StructuredFormatter(logging.Formatter):
    """Shared by the JSON and logstash formats: the static fields, then the record's."""

    def __init__(self, static_fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.static_fields = dict(static_fields)
        # json.dumps with these options would build this encoder again for every line.
        self._encode = json.JSONEncoder(ensure_ascii=False, default=str).encode

    def _line(self, record: logging.LogRecord, head: dict[str, Any]) -> str:
        line = {**head, **self.static_fields}
        own = _plain_fields(record)
        if own is None:
            line.update(record_fields(record))
        else:  # as record_fields would make them, without a dict in between
            for key, value in own.items():
                if value is not None:
                    line[key] = value
        line.setdefault("logger", record.name)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return self._encode(line)


class JsonFormatter(_StructuredFormatter):
    """logrus's JSONFormatter: ``time``, ``level``, ``msg`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        head = {"time": _timestamp(record), "level": _level(record), "msg": record.getMessage()}
        return self._line(record, head)


class LogstashFormatter(_StructuredFormatter):
    """logrus-logstash-hook's formatter: ``@timestamp``, ``@version``, ``message``, ``level``."""

    def format(self, record: logging.LogRecord) -> str:
        head = {
            "@timestamp": _timestamp(record),
            "@version": "1",
            "level": _level(record),
            "message": record.getMessage(),
        }
        return self._line(record, head)


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


def _text_value(value: Any) -> str:
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
        # A busy server writes many lines a second: the seconds' text is made once each.
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        own = _plain_fields(record)
        if (
            own is not None
            and record.exc_info is None
            and not record.exc_text
            and record.stack_info is None
            and (not self.static_fields or self.static_fields.keys().isdisjoint(own))
        ):
            return self._fast(record, own)
        line = super().format(record)
        fields = {**self.static_fields, **record_fields(record)}
        if not fields:
            return line
        pairs = " ".join([f"{key}={_text_value(value)}" for key, value in fields.items()])
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {pairs}{newline}{rest}"

    def _fast(self, record: logging.LogRecord, own: Mapping[str, Any]) -> str:
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
        head = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        return f"{head} {' '.join(pairs)}" if pairs else head


def make_formatter(name: str, static_fields: Mapping[str, Any]) -> logging.Formatter:
    """The formatter ``log.formatter`` names, with ``log.fields`` on every line."""
    if name == "json":
        return JsonFormatter(static_fields)
    if name == "logstash":
        return LogstashFormatter(static_fields)
    if name == "text":
        return TextFormatter(static_fields)
    raise ValueError(f"unknown log formatter {name!r}; expected one of {', '.join(FORMATTERS)}")
