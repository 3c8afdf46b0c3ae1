"""The collection child of ``storage.gc.interval`` (registry/gc_schedule.py) lives no
longer than its registry: a registry stopped with SIGTERM exits promptly and stops its
run; one killed with SIGKILL takes its child with it; with ``--workers`` the same holds
for the first worker, which runs the schedule; and a child killed on its own (the OOM
killer) does not end the schedule.

The child found is stopped (SIGSTOP) once it is in its run, before the registry is
stopped: a collection that never ends by itself, however fast the machine (the limit of a
long one on a large store), and a test that needs no store seeded for seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.portside_servers import ServerProcess, filesystem_registry

INTERVAL = "1s"  # the first run begins a second after start-up


def children(pid: int) -> list[int]:
    """The children of ``pid``, over all its threads (none once it is gone)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the thread, or the process, has just exited
            continue
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


def is_collection_child(pid: int) -> bool:
    """A multiprocessing child (``--multiprocessing-fork``), not its resource tracker."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--multiprocessing-fork" in argv and not any(b"resource_tracker" in a for a in argv)


def stat(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: state, ppid, ...; empty once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, not yet reaped by whoever adopted it) is not."""
    fields = stat(pid)
    return bool(fields) and fields[0] != "Z"


class Started:
    """Processes seen during a test, killed at its end if still there: each is named by
    its pid and start time, so a pid reused by someone else's process is never touched."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, str]] = set()

    def note(self, pids: list[int]) -> None:
        self.seen.update((pid, fields[19]) for pid in pids if (fields := stat(pid)))

    def kill_leftovers(self) -> None:
        for pid, start in self.seen:
            fields = stat(pid)
            if fields and fields[19] == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def wait_for(condition: str, predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not {condition} within {timeout:.0f}s"
        time.sleep(0.02)


def collection_child(registry: Scheduling, timeout: float = 20.0) -> int:
    """The pid of the registry's collection child (or its workers'), once there is one."""
    assert registry.server.process is not None
    root = registry.server.process.pid
    found: list[int] = []

    def appeared() -> bool:
        family = descendants(root)
        registry.started.note(family)
        found[:] = [pid for pid in family if is_collection_child(pid)]
        return bool(found)

    wait_for("a collection child", appeared, timeout)
    assert len(found) == 1, found  # one schedule, however many workers
    child = found[0]
    # Niced: past its start-up (the parent-death signal is asked for just before), in
    # its run.
    wait_for("a niced child", lambda: stat(child)[16:17] == ["19"], timeout)
    return child


@dataclass
class Scheduling:
    server: ServerProcess
    started: Started


@pytest.fixture
def registry(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Scheduling]:
    """``registry serve --workers N`` collecting every second; every process of it seen
    is killed at the end if it is still there (stopped or orphaned by a failed test)."""
    server = filesystem_registry(
        tmp_path, REGISTRY_STORAGE_GC_INTERVAL=INTERVAL, REGISTRY_LOG_LEVEL="info"
    )
    server.args += ["--workers", str(request.param)]
    started = Started()
    server.start()
    try:
        yield Scheduling(server, started)
    finally:
        if server.process is not None:
            started.note(descendants(server.process.pid))
        server.kill()
        started.kill_leftovers()


@pytest.mark.parametrize("registry", [1, 2], indirect=True, ids=["one", "workers"])
def test_a_stopped_registry_exits_promptly_and_stops_its_collection(
    registry: Scheduling,
) -> None:
    child = collection_child(registry)
    os.kill(child, signal.SIGSTOP)
    started = time.monotonic()
    code = registry.server.stop(timeout=15)
    took = time.monotonic() - started
    # Within the child's STOP_WAIT (2 s) plus a loaded machine's margin; a registry that
    # waited for the run to end would not have exited at all (the run never ends).
    assert code == 0 and took < 10, (code, took, registry.server.log()[-2000:])
    assert not alive(child), "the registry exited but left its collection child running"


@pytest.mark.parametrize("registry", [1, 2], indirect=True, ids=["one", "workers"])
def test_a_killed_registry_takes_its_collection_child_with_it(
    registry: Scheduling,
) -> None:
    child = collection_child(registry)
    os.kill(child, signal.SIGSTOP)
    # The child's own parent: the registry, or with --workers the first worker.
    parent = int(stat(child)[1])
    os.kill(parent, signal.SIGKILL)
    wait_for("the child gone", lambda: not alive(child), timeout=10)


@pytest.mark.parametrize("registry", [1], indirect=True)
def test_the_schedule_outlives_a_killed_collection_child(registry: Scheduling) -> None:
    """The OOM killer may take the child alone: the next interval runs in a new one."""
    child = collection_child(registry)
    os.kill(child, signal.SIGKILL)
    wait_for("the child gone", lambda: not alive(child), timeout=10)
    replacement = collection_child(registry)
    assert replacement != child
    assert "its process was killed by SIGKILL" in registry.server.wait_for_log(
        "garbage collection failed"
    )
