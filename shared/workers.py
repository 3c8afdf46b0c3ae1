"""``--workers N`` of both services: a supervisor that forks N worker processes, replaces
any that dies and stops them all on SIGINT/SIGTERM.

The caller binds its addresses first (with SO_REUSEPORT, without listening, so it is given
no connections) and holds them while the workers run: no other user's process can take a
port while a worker is replaced. Each worker binds the same addresses again and serves
with its own event loop, app, caches and threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from shared.listener import ListenError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RESTART_DELAY = 1.0  # seconds before a dead worker is replaced: no busy loop of crashes


def supervise(
    workers: int,
    run_worker: Callable[[int], None],
    *,
    name: str,
    on_exit: Callable[[int], None] | None = None,
) -> None:
    """Fork ``workers`` processes running ``run_worker(index)`` until all have stopped.

    A worker that exits while the supervisor is not stopping is replaced (same index).
    In a worker, a :class:`ListenError` prints one line prefixed with ``name`` and exits 2;
    any other exception is logged and exits 1. ``on_exit(pid)`` is called for each
    worker that exited (e.g. to drop its live metrics).
    """
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            # A supervisor that is SIGKILLed (or OOM-killed) cannot stop its workers:
            # the kernel does, or they would serve on, unsupervised, holding the port.
            die_with_parent(parent)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 0
            try:
                run_worker(index)
            except ListenError as error:
                print(f"{name}: {error}", file=sys.stderr)
                code = 2
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            os._exit(code)
        children[pid] = index

    def stop_all(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    for index in range(workers):
        spawn(index)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        if on_exit is not None:
            on_exit(pid)
        if index >= 0 and not stopping:
            log.error("worker %d (pid %d) exited with %d; starting a new one", index, pid, status)
            time.sleep(RESTART_DELAY)
            spawn(index)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies, or exit at once if it
    died already (between the fork or spawn and this call, when the request would come
    too late).

    The kernel rather than a thread watching the parent: it acts even while the process
    holds the GIL in a long loop, and needs nothing running in it. The signal follows the
    death of the parent's *thread* that created this process: callers create children from
    a thread that lives as long as the parent (its main or event-loop thread).
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # orphaned already: adopted by init or a subreaper
        os._exit(1)
