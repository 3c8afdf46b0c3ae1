"""``--cpu-affinity auto`` (or ``PORTSIDE_CPU_AFFINITY=auto``) of both services: every
thread of each worker (or of the one process) bound to one CPU, round robin over the
CPUs the service may use, a replaced worker on its predecessor's; off by default."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.portside_servers import (
    REPOSITORY_ROOT,
    filesystem_registry,
    tokenauth_process,
)
from tests.support.supervised import children, wait_for, wait_for_replacement, wait_for_workers
from tests.tokenauth.conftest import write_setup

ALLOWED = sorted(os.sched_getaffinity(0))
# With one CPU every process is bound to it anyway: these tests could not tell.
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")


def thread_cpus(pid: int) -> list[set[int]]:
    """The CPUs each thread of ``pid`` may run on."""
    cpus = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            cpus.append(os.sched_getaffinity(int(task.name)))
    return cpus


def bound_cpu(pid: int) -> int:
    """The one CPU every thread of ``pid`` is bound to (fails if they are not)."""
    cpus = thread_cpus(pid)
    assert cpus and all(c == cpus[0] for c in cpus) and len(cpus[0]) == 1, cpus
    return next(iter(cpus[0]))


def push_blob(url: str) -> None:
    """A monolithic blob upload: its commit runs on the file threads."""
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{url}/v2/affinity/test/blobs/uploads/?digest={digest}", data=data, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 201


@needs_two_cpus
def test_registry_workers_are_bound_one_cpu_each_and_a_replacement_to_the_same(
    tmp_path: Path,
) -> None:
    registry = filesystem_registry(tmp_path)
    registry.args += ["--workers", "2", "--cpu-affinity", "auto"]
    registry.start()
    try:
        assert registry.process is not None
        supervisor = registry.process.pid
        wait_for_workers(supervisor, 2)
        for _ in range(10):  # new connections: the kernel spreads them over both workers
            push_blob(registry.url)
        workers = children(supervisor)
        assert sorted(bound_cpu(pid) for pid in workers) == sorted(
            ALLOWED[index % len(ALLOWED)] for index in range(2)
        )
        assert os.sched_getaffinity(supervisor) == set(ALLOWED)  # the supervisor is not
        victim = max(workers)
        victim_cpu = bound_cpu(victim)
        os.kill(victim, signal.SIGKILL)
        wait_for_replacement(supervisor, victim, 2)
        [replacement] = children(supervisor) - workers
        wait_for("the replacement's threads", lambda: len(thread_cpus(replacement)) > 1)
        assert bound_cpu(replacement) == victim_cpu
        push_blob(registry.url)
        assert "worker 0 bound to CPU" in registry.log()
    finally:
        assert registry.stop() == 0


@needs_two_cpus
def test_registry_workers_are_not_bound_by_default(tmp_path: Path) -> None:
    registry = filesystem_registry(tmp_path)
    registry.args += ["--workers", "2"]
    registry.env.pop("PORTSIDE_CPU_AFFINITY", None)
    registry.start()
    try:
        assert registry.process is not None
        supervisor = registry.process.pid
        wait_for_workers(supervisor, 2)
        push_blob(registry.url)
        for pid in children(supervisor):
            assert all(cpus == set(ALLOWED) for cpus in thread_cpus(pid))
    finally:
        assert registry.stop() == 0
    assert "cpu_affinity" not in registry.log()


@needs_two_cpus
def test_tokenauth_workers_are_bound_one_cpu_each(tmp_path: Path) -> None:
    setup = write_setup(tmp_path)
    server = tokenauth_process(
        tmp_path, setup.config, "--workers", "2", PORTSIDE_CPU_AFFINITY="auto"
    )
    server.start()
    try:
        assert server.process is not None
        supervisor = server.process.pid
        wait_for_workers(supervisor, 2)
        wait_for("both bound", lambda: server.log().count(" bound to CPU ") == 2)
        assert sorted(bound_cpu(pid) for pid in children(supervisor)) == sorted(
            ALLOWED[index % len(ALLOWED)] for index in range(2)
        )
    finally:
        assert server.stop() == 0


@needs_two_cpus
def test_one_registry_process_is_bound_and_its_children_are_not(tmp_path: Path) -> None:
    """The one process is bound to the first CPU; what it starts is given back the CPUs
    it had: the log child writes beside it, and the online collection's child, at idle
    priority, would get almost no time on the busy CPU (docs/online-gc.md)."""
    registry = filesystem_registry(
        tmp_path, REGISTRY_STORAGE_DELETE_ENABLED="true", REGISTRY_STORAGE_GC_INTERVAL="1s"
    )
    registry.args += ["--cpu-affinity", "auto"]
    registry.start()
    try:
        push_blob(registry.url)
        assert registry.process is not None
        server = registry.process.pid
        assert bound_cpu(server) == ALLOWED[0]
        unbound: set[str] = set()

        def both_children_unbound() -> bool:
            """Each child read again until all its threads have every CPU: a read made
            before its start finished may find it bound still."""
            for pid in children(server):
                with contextlib.suppress(FileNotFoundError):  # it just ended
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                    for kind in ("log_child", "spawn_main"):  # spawn_main: the collection's
                        cpus = thread_cpus(pid)
                        if (
                            kind.encode() in command
                            and cpus
                            and all(c == set(ALLOWED) for c in cpus)
                        ):
                            unbound.add(kind)
            return len(unbound) == 2

        wait_for("the log child and a collection's child unbound", both_children_unbound)
    finally:
        assert registry.stop() == 0


def test_an_unknown_affinity_is_refused_at_start(tmp_path: Path) -> None:
    for command, environment in (
        (["registry", "serve", "--cpu-affinity", "all"], {}),
        (["tokenauth", "serve", "config.yml"], {"PORTSIDE_CPU_AFFINITY": "yes"}),
    ):
        result = subprocess.run(
            [sys.executable, "-m", *command],
            cwd=REPOSITORY_ROOT,
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "--cpu-affinity" in result.stderr and "off or auto" in result.stderr


BINDING = """
import logging, os, sys, threading
from shared import cpu_affinity
logging.basicConfig(level=logging.INFO)
before = os.sched_getaffinity(0)
stop = threading.Event()
for _ in range(3):  # threads already running when the worker is bound
    threading.Thread(target=stop.wait, daemon=True).start()
if sys.argv[1] == "fail-third":
    real, calls = os.sched_setaffinity, []
    def failing(pid, cpus):
        calls.append(pid)
        if len(calls) == 3:  # the third binding; what follows restores
            raise OSError(22, "Invalid argument")
        real(pid, cpus)
    os.sched_setaffinity = failing
cpus = sorted(before)
print(cpu_affinity.bind_worker(1, cpus))
tasks = os.listdir("/proc/self/task")
print(len(tasks), sorted({tuple(sorted(os.sched_getaffinity(int(t)))) for t in tasks}))
"""


def _bound_in_a_process(mode: str) -> tuple[list[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", BINDING, mode],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines(), result.stderr


def test_every_running_thread_is_bound() -> None:
    lines, errors = _bound_in_a_process("bind")
    cpu = ALLOWED[1 % len(ALLOWED)]
    assert lines == [str(cpu), f"4 [({cpu},)]"]
    assert f"worker 1 bound to CPU {cpu}" in errors


def test_a_failure_half_way_leaves_no_thread_bound() -> None:
    lines, errors = _bound_in_a_process("fail-third")
    assert lines == ["None", f"4 [{tuple(ALLOWED)}]"]
    assert "serving unbound" in errors


def test_a_cpu_that_cannot_be_bound_leaves_the_worker_serving_unbound() -> None:
    """A CPU gone since the supervisor listed them (or a sandbox refusing the call): the
    worker says so and serves on its CPUs, rather than exit and be restarted forever."""
    program = """
import logging, os, sys, threading
from shared.cpu_affinity import bind_worker
logging.basicConfig(level=logging.INFO)
before = os.sched_getaffinity(0)
started = threading.Event()
threading.Thread(target=lambda: (started.set(), threading.Event().wait(5)), daemon=True).start()
started.wait()
print(bind_worker(1, [before.copy().pop(), 4095]))
tasks = os.listdir("/proc/self/task")
print(all(os.sched_getaffinity(int(t)) == before for t in tasks), len(tasks))
"""
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["None", "True", "2"]
    assert "worker 1 not bound to CPU 4095" in result.stderr
    assert "serving unbound" in result.stderr
