"""Lines logged on an event loop are formatted there, a batch at a time, and written by the
log writer thread (shared.log_queue): every line still comes out, in order, bounded."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator

import pytest

from shared.log_format import make_formatter
from shared.log_queue import BatchStreamHandler, queued_logging
from shared.request_context import current_request_id


class Recording(BatchStreamHandler):
    """A handler on a string buffer that notes the threads it formatted lines on; its
    writes wait while ``open`` is clear (a blocked output)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.setFormatter(make_formatter("text", {}))
        self.format_threads: set[int] = set()
        self.open = threading.Event()
        self.open.set()

    def format(self, record: logging.LogRecord) -> str:
        self.format_threads.add(threading.get_ident())
        return super().format(record)

    def write_text(self, text: str) -> None:
        assert self.open.wait(30)
        super().write_text(text)

    def lines(self) -> list[str]:
        stream = self.stream
        assert isinstance(stream, io.StringIO)
        return stream.getvalue().splitlines()


@pytest.fixture
def handler() -> Iterator[Recording]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    recording = Recording()
    root.handlers = [recording]
    root.setLevel(logging.INFO)
    try:
        yield recording
    finally:
        recording.open.set()
        root.handlers = saved
        root.setLevel(level)


log = logging.getLogger("test_log_batches")


def test_loop_lines_are_formatted_on_the_loop_and_all_written(handler: Recording) -> None:
    """Formatting on the writer thread cost two to three times a line's tight-loop cost
    (the interpreter lock changing hands, cold caches); the loop formats its own lines,
    in a batch per window."""

    async def serve() -> None:
        for index in range(300):
            log.info("line %d", index)
            if index % 100 == 99:
                await asyncio.sleep(0.05)  # past the window: a batch is formatted

    with queued_logging():
        asyncio.run(serve())
    lines = handler.lines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(i) for i in range(300)]
    assert handler.format_threads == {threading.get_ident()}  # the loop's, not the writer's


def test_lines_logged_as_the_loop_ends_are_written(handler: Recording) -> None:
    """The loop ends before the batch's callback runs: leaving queued_logging formats and
    writes what it left."""

    async def serve() -> None:
        log.info("first")
        log.info("last")

    with queued_logging():
        asyncio.run(serve())
        asyncio.run(serve())  # a second loop, as after a restart, batches its lines too
    assert [line.rsplit(" ", 1)[1] for line in handler.lines()] == ["first", "last"] * 2


def test_a_line_batched_with_a_requests_keeps_its_own_request_id(handler: Recording) -> None:
    """The batch is formatted in a callback of its own context: a line logged outside any
    request does not take the id of the request whose line started the batch."""

    async def serve() -> None:
        token = current_request_id.set("req-7")
        log.info("inside")
        current_request_id.reset(token)
        log.info("outside")

    with queued_logging():
        asyncio.run(serve())
    inside, outside = handler.lines()
    assert "inside http.request.id=req-7" in inside
    assert outside.endswith("outside")


def test_a_blocked_output_bounds_the_lines_kept_and_counts_the_dropped(
    handler: Recording,
) -> None:
    handler.open.clear()
    capacity = 20

    async def serve() -> int:
        for index in range(200):
            log.info("line %d", index)
            if index % 10 == 9:
                await asyncio.sleep(0.03)  # batches are formatted and handed over
                assert len(front._pending) + front.unwritten <= capacity
        return front.dropped

    with queued_logging(capacity=capacity) as front:
        dropped = asyncio.run(serve())
        handler.open.set()  # the output drains
        assert dropped >= 200 - capacity - 1  # one batch may be in the writer's hands
        asyncio.run(asyncio.sleep(0.2))
        log.info("after")
    lines = handler.lines()
    assert len(lines) == 200 - dropped + 2
    assert f"WARNING portside.logging {dropped} log lines were dropped" in lines[-2]
    assert lines[-1].endswith("after")
