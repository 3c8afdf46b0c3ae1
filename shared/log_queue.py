"""Logging off the event loop, and the log set-up both services share.

:func:`configure_logging` writes records to stderr in the configured format
(:mod:`shared.log_format`). While serving, :func:`queued_logging` puts a
:class:`logging.handlers.QueueHandler` in front of that handler: the event loop only stamps
each record with its request id and message and hands it to a queue, and a
:class:`~logging.handlers.QueueListener` thread formats and writes it. Formatting a line
and the write to stderr (a pipe that can fill up) are what made logging cost a quarter of
the token server's CPU on its loop.

The queue is bounded: if the writer falls that far behind (stderr blocked), lines are
dropped and counted rather than letting memory grow, and the count is logged once there is
room again. Leaving :func:`queued_logging` stops the listener, which writes every line
queued before it returns: nothing logged before a clean shutdown is lost. The listener is a
thread, and threads do not survive ``fork``: each worker process enters
:func:`queued_logging` itself, after it is forked.
"""

from __future__ import annotations

import logging
import queue
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from shared.log_format import make_formatter
from shared.request_context import RequestIdFilter

QUEUE_CAPACITY = 100_000  # lines; a few tens of MB at most, seconds of a busy server's log


def configure_logging(
    level: str, formatter: str = "text", fields: Mapping[str, Any] | None = None
) -> None:
    """Write the root logger's records at ``level`` to stderr as ``formatter`` says, with
    the static ``fields`` (``log.fields``) on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(formatter, fields or {}))
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class BoundedQueueHandler(QueueHandler):
    """Hands records to the listener's thread; drops (and counts) them when it is full."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0
        self.addFilter(RequestIdFilter())  # run here, on the thread that logged

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only the message is made now (its arguments may change once this call returns);
        # formatting, tracebacks included, is left to the listener's thread. The record
        # stays in this process, so nothing needs to be pickled away as the stdlib does.
        record.msg = record.getMessage()
        record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(self._dropped_record())
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _dropped_record(self) -> logging.LogRecord:
        return logging.LogRecord(
            "portside.logging",
            logging.WARNING,
            __file__,
            0,
            f"{self.dropped} log lines were dropped: the log output could not keep up",
            None,
            None,
        )


@contextmanager
def queued_logging(capacity: int = QUEUE_CAPACITY) -> Iterator[BoundedQueueHandler]:
    """While inside, the root logger's handlers run on a thread of their own."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.Queue[logging.LogRecord] = queue.Queue(capacity)
    front = BoundedQueueHandler(records)
    listener = QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    root.handlers = [front]
    try:
        yield front
    finally:
        root.handlers = handlers
        listener.stop()  # returns once every queued line is written
