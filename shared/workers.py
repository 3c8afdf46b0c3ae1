"""``--workers N`` of both services: a supervisor that forks N worker processes, replaces
any that dies and stops them all on SIGINT/SIGTERM.

The caller binds its addresses first (with SO_REUSEPORT, without listening, so it is given
no connections) and holds them while the workers run: no other user's process can take a
port while a worker is replaced. Each worker binds the same addresses again and serves
with its own event loop, app, caches and threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from shared.cpu_affinity import bind_worker
from shared.listener import ListenError
from shared.parent_death import die_with_parent

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before a dead worker is replaced: no busy loop of crashes


def supervise(
    workers: int,
    run_worker: Callable[[int], None],
    *,
    name: str,
    on_exit: Callable[[int], None] | None = None,
    cpus: list[int] | None = None,
) -> None:
    """Fork ``workers`` processes running ``run_worker(index)`` until all have stopped.
    With ``cpus``, each is bound to one of them first (``cpu_affinity.bind_worker``).

    A worker that exits while the supervisor is not stopping is replaced (same index),
    ``RESTART_DELAY`` later. In a worker, a :class:`ListenError` prints one line prefixed
    with ``name`` and exits 2; any other exception is logged and exits 1. ``on_exit(pid)``
    is called for each worker that exited (e.g. to drop its live metrics).

    SIGINT, SIGTERM and SIGCHLD are blocked and taken one at a time with ``sigwaitinfo``
    (the supervisor runs no other thread: it forks). A handler could run between a fork
    and the new worker's registration (the worker would never be told to stop, and the
    supervisor would wait for it forever), or during the restart delay (a worker would
    be started after the stop); taken in the loop, a signal is acted on only between
    steps, with every worker known.
    """
    children: dict[int, int] = {}  # pid -> index
    restarts: dict[int, float] = {}  # index -> when to start it again (monotonic)
    stopping = False
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        for index in range(workers):
            children[_spawn(index, run_worker, name, mask, cpus)] = index
        while children or restarts:
            signum = _next_signal(restarts)
            if signum in (signal.SIGINT, signal.SIGTERM) and not stopping:
                stopping = True
                restarts.clear()
                for pid in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            for pid, status in _reaped():
                index = children.pop(pid, -1)
                if on_exit is not None:
                    on_exit(pid)
                if index >= 0 and not stopping:
                    log.error(
                        "worker %d (pid %d) exited with %d; starting a new one", index, pid, status
                    )
                    restarts[index] = time.monotonic() + RESTART_DELAY
            now = time.monotonic()
            for index in [i for i, due in restarts.items() if due <= now]:
                del restarts[index]
                children[_spawn(index, run_worker, name, mask, cpus)] = index
    finally:
        # After a stop, SIGINT and SIGTERM stay blocked: one sent again while the caller
        # cleans up (or still pending) must not kill it half-way.
        kept = mask | {signal.SIGINT, signal.SIGTERM} if stopping else mask
        signal.pthread_sigmask(signal.SIG_SETMASK, kept)


_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def _next_signal(restarts: dict[int, float]) -> int | None:
    """The next of ``_SIGNALS``, or None when the first restart is due first."""
    if not restarts:
        return signal.sigwaitinfo(_SIGNALS).si_signo
    timeout = min(restarts.values()) - time.monotonic()
    if timeout <= 0:
        return None
    info = signal.sigtimedwait(_SIGNALS, timeout)
    return None if info is None else info.si_signo


def _reaped() -> list[tuple[int, int]]:
    """The (pid, wait status) of every child that has exited, without waiting."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _spawn(
    index: int,
    run_worker: Callable[[int], None],
    name: str,
    mask: set[int],
    cpus: list[int] | None,
) -> int:
    """Fork worker ``index``; its pid. Called with the supervisor's signals blocked: the
    worker inherits that, restores the default actions, and only then unblocks them (a
    SIGTERM sent meanwhile stays pending and then stops it)."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        # A supervisor that is SIGKILLed (or OOM-killed) cannot stop its workers: the
        # kernel does, or they would serve on, unsupervised, holding the port.
        die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if cpus:
            bind_worker(index, cpus)  # before run_worker starts any thread
        run_worker(index)
    except ListenError as error:
        print(f"{name}: {error}", file=sys.stderr)
        code = 2
    except BaseException:
        log.exception("worker %d failed", index)
        code = 1
    os._exit(code)
