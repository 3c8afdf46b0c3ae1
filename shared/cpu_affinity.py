"""``--cpu-affinity auto`` of both services: each worker process bound to one CPU, as
nginx's ``worker_cpu_affinity auto`` binds its workers.

Why it pays for a Python server: a process's event loop and its file threads share one
interpreter lock, which every system call of either thread lets go of. On two CPUs the
threads run at once, so nearly every call hands the lock over and the caller waits,
asleep, to get it back (about 270 context switches per pushed image, issue 17). Bound
to one CPU, a thread runs only while the others wait or block, and the lock rarely
changes hands: 32 x 8 image pushes went 10-30% faster (docs/performance.md, "one CPU
per worker"). The price is that a process's threads can no longer use a second CPU at
once, which is why it suits ``--workers`` equal to the CPUs the service may use.

Worker ``index`` is bound to the index-th CPU (round robin) of those the service was
started on (``taskset``, a container's cpuset), so a replaced worker gets its
predecessor's CPU and two workers share one only when there are more workers than CPUs.
The processes a worker starts get the CPUs back (``children_unbound``, ``release``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

ENVIRONMENT = "PORTSIDE_CPU_AFFINITY"
CHOICES = ("off", "auto")


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--cpu-affinity off|auto`` (default ``$PORTSIDE_CPU_AFFINITY``, else off), parsed
    to whether workers are bound."""
    parser.add_argument(
        "--cpu-affinity",
        type=_choice,
        default=os.environ.get(ENVIRONMENT, "off"),
        metavar="{off,auto}",
        help="auto: bind each worker process to one CPU, round robin over the CPUs the "
        f"service may use (default off, or ${ENVIRONMENT})",
    )


def _choice(value: str) -> bool:
    if value not in CHOICES:
        raise argparse.ArgumentTypeError(f"{value[:20]!r}: off or auto (or ${ENVIRONMENT})")
    return value == "auto"


# The CPUs this process could use before ``bind_worker`` bound it (None: not bound), which
# ``release`` gives back to the processes it starts.
_unbound: set[int] | None = None


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def bind_worker(index: int, cpus: list[int]) -> int | None:
    """Bind every thread of this process to the CPU of worker ``index`` among ``cpus``
    (``allowed_cpus()`` of the supervisor); that CPU, or None when it cannot be bound
    (the cpuset changed since, a sandbox refusing it): the worker then serves unbound
    rather than fail and be restarted forever. Threads started later inherit it."""
    global _unbound
    cpu = cpus[index % len(cpus)]
    unbound = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})  # first this thread, so what it starts inherits it
        bound: set[str] = set()
        # Listed again until no new thread shows up: one started by a thread not yet
        # bound, while the first list was read, would otherwise be missed.
        while tasks := set(os.listdir("/proc/self/task")) - bound:
            for task in tasks:
                with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
                    os.sched_setaffinity(int(task), {cpu})
            bound |= tasks
    except OSError as error:
        # None left bound half-way: this thread first, which needs no listing (a sandbox
        # without /proc fails the listing itself).
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, unbound)
        with contextlib.suppress(OSError):
            for task in os.listdir("/proc/self/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), unbound)
        log.warning("worker %d not bound to CPU %d (%s): serving unbound", index, cpu, error)
        return None
    _unbound = unbound
    log.info("worker %d bound to CPU %d", index, cpu)
    return cpu


@contextlib.contextmanager
def children_unbound() -> Iterator[None]:
    """While the block runs, the calling thread has the CPUs this process had before it
    was bound (nothing changes if it was not), so that a process it starts inherits
    those from its first instruction: a child does work of its own beside the
    worker's, which should not wait for the worker's CPU. The log child writes the
    lines; the online collection's child runs at idle priority and would get almost no
    time on a busy CPU (docs/online-gc.md's margin). For a start made synchronously
    within the block (``subprocess.Popen``, ``multiprocessing``'s ``start``): the thread
    starts nothing else meanwhile."""
    if _unbound is None:
        yield
        return
    bound = os.sched_getaffinity(0)
    with contextlib.suppress(OSError):  # a cpuset that shrank since: the child stays bound
        os.sched_setaffinity(0, _unbound)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, bound)


def release(pid: int) -> None:
    """Give the process ``pid``, just started by this one, the CPUs this process had
    before it was bound (nothing to do if it was not), for a start that is not made
    synchronously (asyncio's subprocesses: the event loop runs other work while it
    waits, which ``children_unbound`` would leave unbound). A thread or a process the
    child started before this call keeps the binding: the walk for leftover temporaries
    starts none, an external authentication program might (a shell that forks its
    command at once; a Go program sizes its runtime by its CPUs before ``main``)."""
    if _unbound is not None:
        with contextlib.suppress(OSError):  # gone already
            os.sched_setaffinity(pid, _unbound)
