"""Logging off the event loop, and the log set-up both services share.

:func:`configure_logging` writes records to stderr in the configured format
(:mod:`shared.log_format`). While serving, :func:`queued_logging` puts a
:class:`logging.handlers.QueueHandler` in front of that handler: the event loop only stamps
each record with its request id and message and hands it to a queue, and a thread
(:class:`LogWriter`) formats the records and writes them, every record waiting at that
moment in one write, at most one write each 20 ms. Formatting each line and writing it to stderr
(a pipe that can fill up, a terminal, a collector) with a system call of its own were what
made logging cost a quarter of the token server's CPU, on its loop. In CPython the writer
still shares the interpreter lock with the loop, so what is gained is the waiting on the
output, the per-line system calls and thread wake-ups, not the formatting itself, which is
kept cheap instead (docs/performance.md#logging has the figures).

The queue is bounded: if the writer falls that far behind (stderr blocked), lines are
dropped and counted rather than letting memory grow, and the count is logged once there is
room again. Leaving :func:`queued_logging` stops the writer once it has written every line
queued before: nothing logged before a clean shutdown is lost. The writer is a thread, and
threads do not survive ``fork``: each worker process enters :func:`queued_logging` itself,
after it is forked.

The stdlib's :class:`~logging.handlers.QueueListener` hands records to its handlers one at
a time (one write and flush each) from a :class:`queue.Queue`, whose every ``put`` runs
Python-level locking; :class:`LogWriter` is the same loop over a C ``SimpleQueue``, taking
all waiting records at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from logging.handlers import QueueHandler
from typing import Any, TextIO

from shared.log_format import make_formatter
from shared.request_context import RequestIdFilter

QUEUE_CAPACITY = 100_000  # lines; a few tens of MB at most, seconds of a busy server's log
MAX_BATCH = 4096  # records formatted and written at once
BATCH_WINDOW = 0.02  # seconds a line may wait for others to be written with it


def configure_logging(
    level: str, formatter: str = "text", fields: Mapping[str, Any] | None = None
) -> None:
    """Write the root logger's records at ``level`` to stderr as ``formatter`` says, with
    the static ``fields`` (``log.fields``) on every line."""
    handler = BatchStreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(formatter, fields or {}))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, BatchStreamHandler)]:
        root.removeHandler(previous)  # an earlier call's (others, a test's, are kept)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # No format here shows the caller's file and line, thread or process: the logging
    # documentation's "Optimization" switches spare each record the work of finding them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class BatchStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that can also write many records in one write (``emit_batch``),
    or format them (``format_batch``) where they were logged and write the text later
    (``write_text``)."""

    def format_batch(self, records: list[logging.LogRecord]) -> str:
        """The lines of the ``records`` this handler takes, as one text."""
        lines = []
        for record in records:
            if record.levelno < self.level or not self.filter(record):
                continue
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:
                self.handleError(record)
        return "".join(lines)

    def write_text(self, text: str) -> None:
        """Write already formatted lines, in one write."""
        if not text:
            return
        self.acquire()
        try:
            self.stream.write(text)
            self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "could not write log lines"}))
        finally:
            self.release()

    def emit_batch(self, records: list[logging.LogRecord]) -> None:
        self.write_text(self.format_batch(records))


class _Formatted:
    """Lines formatted on the event loop, for the writer to write: the text of each batch
    handler, and the records themselves for any other handler."""

    __slots__ = ("lines", "records", "texts")

    def __init__(
        self,
        texts: list[tuple[BatchStreamHandler, str]],
        records: list[logging.LogRecord],
        lines: int,
    ) -> None:
        self.texts, self.records, self.lines = texts, records, lines


class BoundedQueueHandler(QueueHandler):
    """Gathers records for the writer thread; drops (and counts) them when it is full.

    A record logged on a thread running an event loop waits in a list of that loop's
    until a callback, once per window, formats all of them at once and hands the writer
    one text to write (:class:`_Formatted`). Formatting them there, in a batch, costs the
    loop less than handing each record over and having the writer format it: the writer
    took the interpreter lock from the loop for every batch, and formatted each line with
    cold caches, at two to three times a line's cost in a tight loop. Records logged
    elsewhere (before the loop, after it, in executor threads) go to the writer as they
    are, and it formats them.

    ``capacity`` bounds the lines not yet written, waiting or formatted: past it (the
    output is blocked), records are dropped and counted.
    """

    def __init__(
        self,
        records: queue.SimpleQueue[Any],
        capacity: int,
        handlers: list[logging.Handler] | None = None,
    ) -> None:
        super().__init__(records)
        self.records = records  # typed: the base class knows only put_nowait
        self.capacity = capacity
        self.handlers = handlers if handlers is not None else []  # the writer's
        self.dropped = 0
        self.unwritten = 0  # lines handed to the writer, not yet written
        self._drops = threading.Lock()  # the counts, against the writer and other threads
        self._pending: list[logging.LogRecord] = []  # logged on the loop, not yet formatted
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a flush is due
        self.addFilter(RequestIdFilter())  # run here, on the thread that logged

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only the message is made now (its arguments may change once this call returns);
        # formatting, tracebacks included, is left to the batch. The record stays in this
        # process, so nothing needs to be pickled away as the stdlib's prepare does.
        record.msg = record.getMessage()
        record.args = None
        return record

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle holds the handler's lock around emit; the list and the queue need
        # none, so the lock is taken only in enqueue's rare path (a full queue).
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def enqueue(self, record: logging.LogRecord) -> None:
        if self.dropped or len(self._pending) + self.unwritten >= self.capacity:
            with self._drops:  # the writer has fallen behind: rare
                if len(self._pending) + self.unwritten >= self.capacity:
                    self.dropped += 1
                    return
                report = self._dropped_record() if self.dropped else None
                self.dropped = 0
            if report is not None:  # added out of the lock, which _add may take
                self._add(report)
        self._add(record)

    def _add(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop's thread: the writer formats it
            with self._drops:
                self.unwritten += 1
            self.records.put_nowait(record)
            return
        self._pending.append(record)
        if self._flush_loop is not loop:  # none due on this loop (an earlier one may be gone)
            self._flush_loop = loop
            # In an empty context: the request's would name it on the batch's other lines.
            loop.call_later(BATCH_WINDOW, self._flush_due, loop, context=_NO_REQUEST)
        elif len(self._pending) == MAX_BATCH:
            loop.call_soon(self.flush_pending, context=_NO_REQUEST)

    def _flush_due(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flush_loop is loop:
            self._flush_loop = None
        self.flush_pending()

    def flush_pending(self) -> None:
        """Format the records waiting on the loop and hand them to the writer."""
        records, self._pending = self._pending, []
        if not records:
            return
        texts = [
            (h, h.format_batch(records)) for h in self.handlers if isinstance(h, BatchStreamHandler)
        ]
        plain = len(texts) < len(self.handlers)
        with self._drops:
            self.unwritten += len(records)
        self.records.put_nowait(_Formatted(texts, records if plain else [], len(records)))

    def written(self, lines: int) -> None:
        """The writer wrote ``lines`` more lines: room for as many."""
        with self._drops:
            self.unwritten -= lines

    def _dropped_record(self) -> logging.LogRecord:
        message = f"{self.dropped} log lines were dropped: the log output could not keep up"
        return logging.LogRecord(
            "portside.logging", logging.WARNING, __file__, 0, message, None, None
        )


_STOP = object()
_NO_REQUEST = contextvars.Context()


class LogWriter:
    """The thread that writes queued lines to ``handlers``, batch by batch (formatting the
    records that come unformatted)."""

    def __init__(
        self,
        records: queue.SimpleQueue[Any],
        handlers: list[logging.Handler],
        front: BoundedQueueHandler | None = None,
    ) -> None:
        self.records, self.handlers, self.front = records, handlers, front
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Return once every record queued before this call is written."""
        self.records.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        written = 0.0
        while not stopping:
            batch = [self.records.get()]  # an idle server's writer sleeps here
            # A line after a quiet spell is written at once; a busy server's lines gather
            # for the rest of the window: one wake-up, one hand-over of the interpreter
            # lock and one write per window rather than per line.
            wait = written + BATCH_WINDOW - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            self._write_items(batch)
            written = time.monotonic()

    def _write_items(self, items: list[Any]) -> None:
        # In order: records as they came, up to each batch formatted on the loop.
        records: list[logging.LogRecord] = []
        lines = 0
        for item in items:
            if isinstance(item, _Formatted):
                self._write(records)
                records = []
                for handler, text in item.texts:
                    handler.write_text(text)
                self._write(item.records, batches=False)
                lines += item.lines
            else:
                records.append(item)
                lines += 1
        self._write(records)
        if self.front is not None:
            self.front.written(lines)

    def _write(self, batch: list[logging.LogRecord], *, batches: bool = True) -> None:
        if not batch:
            return
        for handler in self.handlers:
            if isinstance(handler, BatchStreamHandler):
                if batches:
                    handler.emit_batch(batch)
            else:
                for record in batch:
                    if record.levelno >= handler.level:
                        handler.handle(record)


@contextmanager
def queued_logging(capacity: int = QUEUE_CAPACITY) -> Iterator[BoundedQueueHandler]:
    """While inside, the root logger's handlers run on a thread of their own."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    front = BoundedQueueHandler(records, capacity, handlers)
    writer = LogWriter(records, handlers, front)
    writer.start()
    root.handlers = [front]
    try:
        yield front
    finally:
        root.handlers = handlers
        front.flush_pending()  # what the loop had not formatted when it stopped
        writer.stop()
