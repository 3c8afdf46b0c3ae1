"""The ``--workers`` supervisor (``shared.workers.supervise``) stops, and stops every
worker, whenever SIGTERM arrives, made to arrive in its two awkward moments: right after
the fork of a replacement worker (before the supervisor has noted its pid), and during
the delay before a dead worker is replaced.

Each case runs ``supervise`` in a subprocess with workers that just wait for a signal;
the supervisor sends SIGTERM to itself at the awkward moment, through a wrapper of
``os.fork`` or of the worker's exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STOP_BOUND = 30.0  # seconds for the supervisor to stop: generous, the machine is shared

# Worker 0's first run exits at once, so it is replaced; every other run waits.
SUPERVISOR = """
import os, signal, sys
from shared import workers

moment = sys.argv[1]
first = [True]
real_fork = os.fork

def run_worker(index):
    if index == 0 and first[0]:
        return
    signal.pause()

def fork():
    pid = real_fork()
    if pid and moment == "fork" and not first[0]:
        os.kill(os.getpid(), signal.SIGTERM)  # before the supervisor notes the pid
    return pid

def exited(pid):
    if moment == "delay" and first[0]:
        print("exited", flush=True)  # the test sends SIGTERM during the delay
    first[0] = False

os.fork = fork
workers.RESTART_DELAY = {"fork": 0.1, "delay": 60.0}[moment]
workers.supervise(2, run_worker, name="test", on_exit=exited)
print("stopped", flush=True)
"""


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("moment", ["fork", "delay"])
def test_sigterm_stops_every_worker_at_any_moment(moment: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, moment],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    workers: list[int] = []
    try:
        if moment == "delay":
            assert process.stdout.readline() == "exited\n"
            workers = children(process.pid)
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_BOUND
        while process.poll() is None and time.monotonic() < deadline:
            workers = sorted(set(workers) | set(children(process.pid)))
            time.sleep(0.05)
        assert process.poll() == 0, "the supervisor did not stop"
        assert process.stdout.read() == "stopped\n"
    finally:
        if process.poll() is None:
            for pid in children(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
        process.wait()
        process.stdout.close()
    for pid in workers:  # every worker stopped with it (reaped: no /proc entry)
        assert not Path(f"/proc/{pid}").exists()
