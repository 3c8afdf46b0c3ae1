"""Logging off the event loop, and the log set-up both services share.

:func:`configure_logging` writes records to stderr in the configured format
(:mod:`shared.log_format`). While serving, :func:`queued_logging` puts a
:class:`logging.handlers.QueueHandler` in front of that handler: the event loop only stamps
each record with its request id and message and hands it to a queue, and a thread
(:class:`LogWriter`) formats the records and writes them, every record waiting at that
moment in one write, at most one write each 20 ms (an access line skips the record and the
handlers and is queued as its text, or its values: :class:`DirectLines`; the writer is
woken only after it found the queue empty: :class:`Wakeup`). When the handler writes to a
file descriptor in one of the services' formats, the writer hands each batch to a log
child instead (:mod:`shared.log_child`), which makes the access lines from their values
and writes every line, off this process's interpreter lock. Formatting each line and
writing it to stderr (a pipe that can fill up, a terminal, a collector) with a system call
of its own were what made logging cost a quarter of the token server's CPU, on its loop.
In CPython the writer still shares the interpreter lock with the loop, so what is gained
is the waiting on the output, the per-line system calls and thread wake-ups, not the
formatting itself, which is kept cheap instead (docs/performance.md#logging has the
figures).

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

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from logging.handlers import QueueHandler
from typing import Any, TextIO, cast

from shared.access_text import MESSAGE, Captured, access_fields, access_line
from shared.log_child import LogChild, Settings
from shared.log_format import (
    FIELDS_ATTRIBUTE,
    JsonFormatter,
    LineFormatter,
    LogstashFormatter,
    TextFormatter,
    make_formatter,
)
from shared.request_id import RequestIdFilter, current_request_id

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
    """A stream handler that can also write many records in one write (``emit_batch``)."""

    def emit_batch(self, records: list[QueueItem]) -> None:
        """Write ``records``, in order: lines already made (:class:`DirectLines`) as they
        are, access lines and pending lines rendered, log records filtered and formatted."""
        self.write_lines(self.lines(records))

    def lines(self, records: list[QueueItem], *, made_apart: bool = False) -> list[Any]:
        """The text of ``records``, in order (none for a record this handler's level or
        filters leave out); with ``made_apart``, access lines' values are kept as they
        are, for the log child to make (:class:`shared.log_child.LogChild`)."""
        lines: list[Any] = []
        for record in records:
            kind = type(record)
            if kind is str:  # most items of a busy server: its access lines
                lines.append(record)
                continue
            if kind is tuple:  # an access line's values (DirectLines.apart)
                if made_apart:
                    lines.append(record)
                    continue
                try:
                    formatter = cast(LineFormatter, self.formatter)
                    lines.append(access_line(formatter, *cast(AccessItem, record)))
                except Exception:
                    self.handleError(_record_of("an access line could not be made"))
                continue
            if isinstance(record, PendingLine):
                try:
                    lines.append(record.render())
                except Exception:  # reported as a record's formatting error is, then on
                    message = f"a {type(record).__name__} could not be rendered"
                    self.handleError(_record_of(message))
                continue
            assert isinstance(record, logging.LogRecord)
            if record.levelno < self.level or not self.filter(record):
                continue
            try:
                lines.append(self.format(record))
            except Exception:
                self.handleError(record)
        return lines

    def write_lines(self, lines: list[str]) -> None:
        """Write ``lines`` (without their terminators) in one write."""
        if lines:
            terminator = self.terminator
            self.acquire()
            try:
                self.stream.write(terminator.join(lines) + terminator)
                self.flush()
            except Exception:
                # Never re-render an item here: one that cannot be rendered would raise
                # again and end the writer thread.
                self.handleError(_record_of("a batch of log lines could not be written"))
            finally:
                self.release()


class Wakeup:
    """How the writer, idle, is woken by the first line after a quiet spell, and only by it.

    A writer blocked in ``SimpleQueue.get`` is woken by the very next ``put``: a futex
    wake-up of its thread from the event loop, which then competes with the loop for the
    interpreter lock, once per write window (docs/performance.md#per-request-overhead).
    The writer instead sleeps the window out and drains the queue without blocking on it;
    only when it found the queue empty does it say so (``idle``), and the next line sets
    ``event``.
    """

    __slots__ = ("event", "idle")

    def __init__(self) -> None:
        self.idle = False
        self.event = threading.Event()

    def wake(self) -> None:
        self.idle = False
        self.event.set()


class BoundedQueueHandler(QueueHandler):
    """Hands records to the writer thread; drops (and counts) them when it is full."""

    def __init__(
        self, records: queue.SimpleQueue[Any], capacity: int, wakeup: Wakeup | None = None
    ) -> None:
        super().__init__(records)
        self.records = records  # typed: the base class knows only put_nowait
        self.capacity = capacity
        self.wakeup = wakeup or Wakeup()
        self.dropped = 0
        self._drops = threading.Lock()  # the count, against other threads that log
        self.addFilter(RequestIdFilter())  # run here, on the thread that logged

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only the message is made now (its arguments may change once this call returns);
        # formatting, tracebacks included, is left to the writer. The record stays in this
        # process, so nothing needs to be pickled away as the stdlib's prepare does.
        record.msg = record.getMessage()
        record.args = None
        return record

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle holds the handler's lock around emit; the queue is thread-safe,
        # so the lock is taken only in enqueue's rare path (a full queue, drops to report).
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def enqueue(self, record: QueueItem) -> None:
        # A line (DirectLines) takes the same queue as records: lines keep their order,
        # and the bound and the drop count hold for both.
        if self.dropped or self.records.qsize() >= self.capacity:
            with self._drops:  # the writer has fallen behind: rare
                if self.records.qsize() >= self.capacity:
                    self.dropped += 1
                    return
                if self.dropped:
                    self.records.put_nowait(self._dropped_record())
                    self.dropped = 0
        self.records.put_nowait(record)
        if self.wakeup.idle:  # the first line after a quiet spell
            self.wakeup.wake()

    def _dropped_record(self) -> logging.LogRecord:
        message = f"{self.dropped} log lines were dropped: the log output could not keep up"
        return logging.LogRecord(
            "portside.logging", logging.WARNING, __file__, 0, message, None, None
        )


class PendingLine:
    """A line whose formatter and values are known, to be rendered by the writer thread.

    What a log record would have become, without the record: see :class:`DirectLines`.
    """

    __slots__ = ()

    def render(self) -> str:
        raise NotImplementedError


# An access line's values, for the log child to make it (DirectLines.apart): the logger's
# name, the time the line was made, the values captured.
AccessItem = tuple[str, float, Captured]
# What the writer's queue holds: records, lines to render, lines made (without their
# terminator) and access lines' values.
QueueItem = logging.LogRecord | PendingLine | str | AccessItem


def _record_of(item: QueueItem) -> logging.LogRecord:
    """``item`` as a record (a pending line's text, or a text, becomes its message)."""
    if isinstance(item, logging.LogRecord):
        return item
    if isinstance(item, tuple):  # an access line's values: its record, fields and all
        name, created, captured = item
        record = logging.LogRecord(name, logging.INFO, "", 0, MESSAGE, None, None)
        record.created = created
        setattr(record, FIELDS_ATTRIBUTE, access_fields(*captured))
        return record
    text = item if isinstance(item, str) else item.render()
    return logging.LogRecord("portside.logging", logging.INFO, "", 0, text, None, None)


class DirectLines:
    """Where the access log puts its lines formatted at once, as text, while the log set-up
    is the one :func:`configure_logging` and :func:`queued_logging` made.

    An access line's record went through the logging machinery only to reach this
    queue and the one handler behind it, to be formatted there: the event loop now queues
    the line itself, made with the formatter's ``info_line`` (or a line's values and the
    formatter, a :class:`PendingLine`, which the writer renders), and the writer thread
    writes it, without a record, a filter or a handler on the way
    (docs/performance.md#per-request-overhead). Whenever the set-up is not that one (a
    handler or filter added, propagation turned off, a request id in context that the
    record would be stamped with), :meth:`route` says so and the caller logs a record as
    before: the lines are the same either way.
    """

    def __init__(self, front: BoundedQueueHandler, formatter: LineFormatter) -> None:
        self.formatter = formatter
        self.front = front
        # Whether a log child makes the access lines: then the loop queues an access
        # line's values (an AccessItem), not its text (shared.log_child).
        self.apart = False
        self._root = logging.getLogger()
        self._filters = list(front.filters)
        # Queue a line: made (its text, without the terminator) or to be rendered. The
        # queue handler's own method, not one of this class calling it: one Python call
        # fewer per access line.
        self.put: Callable[[PendingLine | str | AccessItem], None] = front.enqueue

    def route(self, logger: logging.Logger, *, stamped: bool = False) -> bool:
        """Whether a record logged at INFO on ``logger`` would reach only this queue's
        handler, untouched on the way: then its line may be put here as text.

        ``stamped``: the caller puts the request id in context into the line's fields
        itself (``http.request.id``), as the handler's filter would stamp the record.
        """
        root = self._root
        handlers = root.handlers
        if len(handlers) != 1 or handlers[0] is not self.front or logger.filters:
            return False
        if self.front.filters != self._filters:
            return False
        if not stamped and current_request_id.get() is not None:
            return False
        node: logging.Logger | None = logger
        while node is not root and node is not None:
            if node.handlers or not node.propagate or node.disabled:
                return False
            node = node.parent
        return node is root


# The lines' way round the logging machinery while queued_logging is on, else None.
direct_lines: DirectLines | None = None


def _direct_lines(
    front: BoundedQueueHandler, handlers: list[logging.Handler]
) -> DirectLines | None:
    if len(handlers) != 1 or not isinstance(handlers[0], BatchStreamHandler):
        return None
    handler, formatter = handlers[0], handlers[0].formatter
    if handler.level > logging.INFO or not isinstance(
        formatter, TextFormatter | JsonFormatter | LogstashFormatter
    ):
        return None
    # The handler's own filter only stamps request ids, which route() rules out.
    if any(type(f) is not RequestIdFilter for f in handler.filters):
        return None
    return DirectLines(front, formatter)


_STOP = object()


class LogWriter:
    """The thread that formats and writes queued records to ``handlers``, batch by batch."""

    def __init__(
        self,
        records: queue.SimpleQueue[Any],
        handlers: list[logging.Handler],
        wakeup: Wakeup | None = None,
    ) -> None:
        self.records, self.handlers = records, handlers
        self.wakeup = wakeup or Wakeup()
        # Where the lines go when a log child writes them (only with DirectLines, so
        # handlers is one BatchStreamHandler), else None.
        self.child: LogChild | None = None
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Return once every record queued before this call is written."""
        self.records.put(_STOP)
        self.wakeup.wake()
        self._thread.join()

    def _run(self) -> None:
        records, wakeup = self.records, self.wakeup
        while True:
            batch: list[Any] = []
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                # Idle: the next line wakes us (a line put before ``idle`` was set is
                # seen by the emptiness check; one put after it sets the event).
                wakeup.event.clear()
                wakeup.idle = True
                if records.empty():
                    wakeup.event.wait()
                wakeup.idle = False
                continue
            stopping = _STOP in batch
            if stopping:
                batch = [record for record in batch if record is not _STOP]
            self._write(batch)
            if stopping:
                return
            # A line after a quiet spell is written at once; a busy server's lines gather
            # for a window: one wake-up, one hand-over of the interpreter lock and one
            # write per window rather than per line.
            time.sleep(BATCH_WINDOW)

    def _write(self, batch: list[QueueItem]) -> None:
        if self.child is not None:
            self._hand_over(self.child, batch)
            return
        for handler in self.handlers:
            if isinstance(handler, BatchStreamHandler):
                handler.emit_batch(batch)
            else:  # no pending lines here: DirectLines needs one BatchStreamHandler
                for item in batch:
                    record = _record_of(item)
                    if record.levelno >= handler.level:
                        handler.handle(record)

    def _hand_over(self, child: LogChild, batch: list[QueueItem]) -> None:
        """Hand ``batch`` to the log child, in one frame; lines it cannot take are written
        here."""
        handler = cast(BatchStreamHandler, self.handlers[0])
        items = handler.lines(batch, made_apart=True)
        if not items:
            return
        try:
            child.send(items)
            return
        except ValueError:  # a service's field marshal cannot write: the lines made here
            items = handler.lines(items)
        except OSError:  # the child is gone (killed): this thread writes from now on
            self.child = None
            handler.write_lines(handler.lines(items))
            return
        try:
            child.send(items)  # text only now
        except (OSError, ValueError):  # gone meanwhile; nothing here may end this thread
            self.child = None
            handler.write_lines(items)


# The log child's name of each formatter (shared.log_format.make_formatter's).
_FORMATTER_NAMES: dict[type[logging.Formatter], str] = {
    TextFormatter: "text",
    JsonFormatter: "json",
    LogstashFormatter: "logstash",
}


def _log_child(handlers: list[logging.Handler]) -> LogChild | None:
    """A log child writing to the stream of ``handlers``' one BatchStreamHandler, if it
    writes to a file descriptor (standard error, a file); else None (a test's buffer)."""
    handler = handlers[0]
    assert isinstance(handler, BatchStreamHandler)
    stream, formatter = handler.stream, handler.formatter
    if not isinstance(formatter, TextFormatter | JsonFormatter | LogstashFormatter):
        return None
    name = _FORMATTER_NAMES.get(type(formatter))  # a subclass may write otherwise
    if name is None:
        return None
    try:
        output = stream.fileno()
        settings: Settings = (
            name,
            formatter.static_fields,
            stream.encoding,
            stream.errors or "strict",
            handler.terminator,
        )
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    stream.flush()  # what this process wrote before goes out first
    return LogChild(settings, output)


@contextmanager
def queued_logging(capacity: int = QUEUE_CAPACITY) -> Iterator[BoundedQueueHandler]:
    """While inside, the root logger's handlers run on a thread of their own (and, when
    they write to a file descriptor in one of the services' formats, the lines are made
    and written by a log child: :mod:`shared.log_child`)."""
    global direct_lines
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    wakeup = Wakeup()
    front = BoundedQueueHandler(records, capacity, wakeup)
    writer = LogWriter(records, handlers, wakeup)
    lines = _direct_lines(front, handlers)
    child = None if lines is None else _log_child(handlers)
    if lines is not None and child is not None:
        writer.child, lines.apart = child, True
    writer.start()
    root.handlers = [front]
    direct_lines = lines
    try:
        yield front
    finally:
        direct_lines = None
        root.handlers = handlers
        writer.stop()
        if child is not None:
            child.close()  # returns once the child has written every line
