"""The collection's walk for killed writers' temporaries, run as a child process
(``remove_abandoned_apart``): it never outlives the collector, leaves Ctrl-C to it, and a
walk that fails costs the collection nothing. Real processes and real signals; the big
trees live on tmpfs (/dev/shm), where making and removing them costs no disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.storage.driver import child_program, temporaries
from tests.support.process_state import alive

SIGINT_BIT = 1 << (signal.SIGINT - 1)  # in /proc/<pid>/status's SigIgn mask
WALKED_DIRECTORIES = 60_000  # a walk of about half a second or more: time to catch it


def _abandoned(directory: Path) -> Path:
    path = directory / f".data.{uuid.uuid4().hex}.tmp"
    path.write_bytes(b"left by a killed writer")
    return path


@pytest.fixture(scope="module")
def big_tree() -> Iterator[Path]:
    root = Path(
        tempfile.mkdtemp(prefix="walk-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    try:
        for index in range(WALKED_DIRECTORIES):
            os.makedirs(root / f"{index % 256:02x}" / str(index))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    found.append(int(entry))
    return found


def _ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    return 0


def _walking_child(collector: subprocess.Popen[bytes], deadline: float = 30.0) -> int:
    """The collector's walk, once it is set up (it ignores SIGINT by then, the last step
    before walking); fails the test if the walk is not seen while it runs."""
    ends = time.monotonic() + deadline
    while time.monotonic() < ends and collector.poll() is None:
        for child in _children(collector.pid):
            with contextlib.suppress(OSError):
                if _ignored_signals(child) & SIGINT_BIT:
                    return child
        time.sleep(0.002)
    raise AssertionError("the walk's child process was not seen walking")


def _collector(root: Path) -> subprocess.Popen[bytes]:
    """A process that runs the walk as a collection does, in a session of its own (so a
    signal to its group reaches only it and its walk)."""
    program = (
        "import asyncio, pathlib, sys\n"
        "from registry.storage.driver.temporaries import remove_abandoned_apart\n"
        "print(asyncio.run(remove_abandoned_apart(pathlib.Path(sys.argv[1]))))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", program, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_the_walk_dies_with_a_killed_collector(big_tree: Path) -> None:
    """SIGKILL of the collector (the scheduled collection stopped, the registry gone)
    takes its walk with it. The walk is stopped first, so only a signal can end it: a
    walk that outlived its collector would stay, stopped, adopted by init."""
    collector = _collector(big_tree)
    walk = None
    try:
        walk = _walking_child(collector)
        os.kill(walk, signal.SIGSTOP)
        collector.kill()
        collector.wait(timeout=10)
        ends = time.monotonic() + 10
        while alive(walk) and time.monotonic() < ends:
            time.sleep(0.01)
        assert not alive(walk), "the walk outlived its collector"
    finally:
        collector.kill()
        collector.communicate(timeout=10)
        if walk is not None and alive(walk):
            os.kill(walk, signal.SIGKILL)


def test_ctrl_c_interrupts_the_collector_and_ends_its_walk(big_tree: Path) -> None:
    """The terminal sends SIGINT to the whole group: the collector is interrupted as
    usual (KeyboardInterrupt, not an error of its walk) and its walk ends with it."""
    collector = _collector(big_tree)
    walk = None
    try:
        walk = _walking_child(collector)
        os.killpg(collector.pid, signal.SIGINT)
        _, errors = collector.communicate(timeout=30)
        text = errors.decode(errors="replace")
        assert "KeyboardInterrupt" in text and "OSError" not in text, text[-2000:]
        ends = time.monotonic() + 10
        while alive(walk) and time.monotonic() < ends:
            time.sleep(0.01)
        assert not alive(walk)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.communicate(timeout=10)
        if walk is not None and alive(walk):
            os.kill(walk, signal.SIGKILL)


def test_the_walk_refuses_to_start_for_a_parent_that_is_not_its_own(tmp_path: Path) -> None:
    """Run for a parent that is gone (here: one that is not its parent), the walk exits
    at once and removes nothing; for its own parent it removes what it finds."""
    left = _abandoned(tmp_path)
    program = child_program.command(temporaries.__file__, str(tmp_path))
    stranger = subprocess.run([*program, "1"], capture_output=True, timeout=60)
    assert stranger.returncode != 0 and left.exists()
    own = subprocess.run([*program, str(os.getpid())], capture_output=True, timeout=60)
    assert own.returncode == 0 and own.stdout.strip() == b"1" and not left.exists()


def test_a_fifo_named_like_a_temporary_does_not_hold_the_walk(tmp_path: Path) -> None:
    """A FIFO's open for reading waits for a writer: the walk opens without waiting and
    leaves anything that is not a plain file alone. (Run as the walk's own program, so
    that a walk held in open() is a timeout here, not a hung test.)"""
    fifo = tmp_path / f".data.{uuid.uuid4().hex}.tmp"
    os.mkfifo(fifo)
    left = _abandoned(tmp_path)
    program = child_program.command(temporaries.__file__, str(tmp_path), str(os.getpid()))
    walk = subprocess.run(program, capture_output=True, timeout=30)
    assert walk.returncode == 0 and walk.stdout.strip() == b"1", walk
    assert fifo.exists() and not left.exists()


async def test_a_walk_that_cannot_start_or_dies_costs_the_collection_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The walk's failure is logged and counts no temporary; the collection that asked
    for it goes on (it used to raise after every deletion was done)."""
    caplog.set_level(logging.WARNING, logger="registry.storage.temporaries")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    assert await temporaries.remove_abandoned_apart(tmp_path) == 0
    assert "could not start" in caplog.text
    monkeypatch.undo()
    dying = tmp_path / "dying.py"
    dying.write_text("import sys\nsys.exit('the walk broke')\n")
    monkeypatch.setattr(temporaries, "_PROGRAM", str(dying))
    assert await asyncio.wait_for(temporaries.remove_abandoned_apart(tmp_path), 60) == 0
    assert "failed (exit 1): the walk broke" in caplog.text
