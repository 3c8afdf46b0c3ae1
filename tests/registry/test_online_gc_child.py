"""The collection child of ``storage.gc.interval`` (registry/gc_schedule.py) lives no
longer than its registry: a registry stopped with SIGTERM exits promptly and stops its
run; one killed with SIGKILL takes its child with it; with ``--workers`` the same holds
for the first worker, which runs the schedule; and a child killed on its own (the OOM
killer) does not end the schedule. It runs at idle CPU and I/O priority in every
thread (storage.gc.priority's default), and still ends while clients keep the registry
busy.

The child found is stopped (SIGSTOP) once it is in its run, before the registry is
stopped: a collection that never ends by itself, however fast the machine (the limit of a
long one on a large store), and a test that needs no store seeded for seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
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


def at_idle_priority(pid: int) -> bool:
    """Whether ``pid`` (its main thread) runs in the SCHED_IDLE CPU class and the idle
    I/O class, as registry/gc_priority.py puts a collection."""
    try:
        return (
            os.sched_getscheduler(pid) == os.SCHED_IDLE
            and psutil.Process(pid).ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
        )
    except (OSError, psutil.Error):  # gone
        return False


def collection_child(registry: Scheduling, timeout: float = 20.0) -> int:
    """The pid of the registry's collection child (or its workers'), once it is in its
    run: at idle priority, which it takes after its start-up (the parent-death signal is
    asked for just before). A child that ends first is followed by the next interval's."""
    assert registry.server.process is not None
    root = registry.server.process.pid
    found: list[int] = []

    def running() -> bool:
        family = descendants(root)
        registry.started.note(family)
        found[:] = [pid for pid in family if is_collection_child(pid)]
        assert len(found) <= 1, found  # one schedule, however many workers
        return bool(found) and at_idle_priority(found[0])

    wait_for("a collection child at idle priority", running, timeout)
    return found[0]


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


@pytest.mark.parametrize("registry", [1], indirect=True)
def test_the_collection_runs_at_idle_cpu_and_io_priority(registry: Scheduling) -> None:
    """SCHED_IDLE and the idle I/O class, in every thread of the child (each inherits
    them): nice 19 alone left it a fifth of a busy registry's throughput."""
    child = collection_child(registry)
    os.kill(child, signal.SIGSTOP)  # held in its run while its threads are looked at
    threads = [thread.id for thread in psutil.Process(child).threads()]
    assert threads and all(at_idle_priority(thread) for thread in threads), threads


def push_unreferenced_blob(url: str, data: bytes) -> str:
    """A monolithic upload no manifest names (garbage once the grace period has passed)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        connection.request("POST", f"/v2/idle/test/blobs/uploads/?digest={digest}", data)
        response = connection.getresponse()
        response.read()
        assert response.status == 201, response.status
    finally:
        connection.close()
    return digest


def blob_status(url: str, digest: str) -> int:
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        connection.request("HEAD", f"/v2/idle/test/blobs/{digest}")
        return connection.getresponse().status
    finally:
        connection.close()


def keep_busy(url: str, stop: threading.Event) -> None:
    """GET manifests that are not there, back to back over one keep-alive connection."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        while not stop.is_set():
            connection.request("GET", "/v2/idle/test/manifests/absent")
            connection.getresponse().read()
    finally:
        connection.close()


def test_an_idle_priority_collection_still_ends_while_the_registry_is_busy(
    tmp_path: Path,
) -> None:
    server = filesystem_registry(
        tmp_path,
        REGISTRY_STORAGE_GC_INTERVAL=INTERVAL,
        REGISTRY_STORAGE_GC_GRACEPERIOD="1s",
        REGISTRY_LOG_LEVEL="info",
    )
    started = Started()
    server.start()
    stop = threading.Event()
    clients = [threading.Thread(target=keep_busy, args=(server.url, stop)) for _ in range(2)]
    try:
        digest = push_unreferenced_blob(server.url, b"garbage of an idle collection")
        for client in clients:
            client.start()
        collection_child(Scheduling(server, started))
        # Generous: at idle priority it takes only what this machine's other work leaves.
        server.wait_for_log("garbage collection deleted 1 blobs", timeout=120)
        assert blob_status(server.url, digest) == 404
    finally:
        stop.set()
        for client in clients:
            if client.is_alive():
                client.join()
        if server.process is not None:
            started.note(descendants(server.process.pid))
        server.kill()
        started.kill_leftovers()
