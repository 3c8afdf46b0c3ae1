"""The log writer thread: woken by the first line after a quiet spell, never stranding a
line, and not woken line by line while lines keep coming."""

from __future__ import annotations

import io
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared.log_queue import (
    BatchStreamHandler,
    BoundedQueueHandler,
    LogWriter,
    PendingLine,
    Wakeup,
)


class CountingWakeup(Wakeup):
    __slots__ = ("wakes",)

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1
        super().wake()


class Writing:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        handler = BatchStreamHandler(self.stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.wakeup = CountingWakeup()
        self.front = BoundedQueueHandler(records, 100_000, self.wakeup)
        self.writer = LogWriter(records, [handler], self.wakeup)

    def log(self, message: str) -> None:
        self.front.handle(logging.LogRecord("t", logging.INFO, "", 0, message, None, None))

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def writing() -> Iterator[Writing]:
    writing = Writing()
    writing.writer.start()
    try:
        yield writing
    finally:
        writing.writer.stop()


def test_no_line_waits_for_the_next_one(writing: Writing) -> None:
    """Each line logged after a pause (long or short, racing the writer going idle) is
    written without another line to wake the writer."""
    rng = random.Random(7)
    for index in range(60):
        writing.log(f"line {index}")
        deadline = time.monotonic() + 10  # 20 ms expected: margin for a loaded machine
        while len(writing.lines()) <= index:
            assert time.monotonic() < deadline, f"line {index} was not written"
            time.sleep(0.001)
        time.sleep(rng.choice([0, 0, 0.0005, 0.002, 0.019, 0.021, 0.03]))
    assert writing.lines() == [f"line {index}" for index in range(60)]


def test_a_busy_writer_is_not_woken_per_line(writing: Writing) -> None:
    """Lines from several threads, one every few hundred microseconds: the writer wakes
    on its own timer, the loggers wake it only after it found the queue empty; every line
    is written, each thread's in order."""
    per_thread, threads = 400, 3

    def log_many(name: str) -> None:
        for index in range(per_thread):
            writing.log(f"{name} {index}")
            time.sleep(0.0005)

    workers = [threading.Thread(target=log_many, args=(f"t{n}",)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writing.writer.stop()  # writes what is queued; the fixture's stop then returns at once
    lines = writing.lines()
    assert len(lines) == per_thread * threads
    for n in range(threads):
        mine = [line for line in lines if line.startswith(f"t{n} ")]
        assert mine == [f"t{n} {index}" for index in range(per_thread)]
    # At most once per write window it went idle; far fewer than the lines.
    assert writing.wakeup.wakes < per_thread * threads / 10


class Unrenderable(PendingLine):
    __slots__ = ()

    def render(self) -> str:
        raise ValueError("no line")


def test_a_line_that_cannot_be_rendered_stops_nothing(
    writing: Writing, capsys: pytest.CaptureFixture[str]
) -> None:
    """It is reported as logging reports a record it cannot format; the lines around it
    are written and the writer goes on."""
    writing.log("before")
    writing.front.enqueue(Unrenderable())
    writing.log("after")
    writing.writer.stop()
    assert writing.lines() == ["before", "after"]
    assert "Unrenderable could not be rendered" in capsys.readouterr().err
