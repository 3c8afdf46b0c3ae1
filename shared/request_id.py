"""The id of the request being served, for the log lines logged while it is served.

Apart from :mod:`shared.request_context`, which sets it and imports aiohttp's server:
logging is configured by one-shot commands too (``registry garbage-collect``), which
serve nothing and need not import the framework (about 0.15 s of their start-up).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served where it was logged
    (on that thread: a record handed to another thread keeps the stamp it was given)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        return True
