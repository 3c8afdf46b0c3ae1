"""The low priority a collection runs at beside a serving registry
(``storage.gc.priority``): ``idle``, CPU and I/O only when nothing else wants them, or
``low``, nice 19.

Both the scheduled collection's child (``registry/gc_schedule.py``) and
``registry garbage-collect --low-priority`` call :func:`lower_priority` before they
collect. Nice 19 only shrinks a process's share of contended CPUs, and a woken registry
may wait for the end of its slice: on two vCPUs busy with the registry and its clients
it still took a fifth of the registry's throughput (docs/performance.md). ``SCHED_IDLE``
gives up the CPU to any other task at once and takes the smallest share there is; the
I/O ``idle`` class (honoured by the BFQ and mq-deadline schedulers) serves its disk
requests only when no one else's wait. The price is the collection's length, which grows
with the load: on a machine kept busy all the time, ``low`` keeps it moving.

Either may be refused (a seccomp profile, a kernel without them): the CPU class then
falls back to nice 19, the I/O class stays as it was, and one warning says so.
"""

from __future__ import annotations

import logging
import os

import psutil

log = logging.getLogger("registry.gc")

NICENESS = 19  # ``low``, and ``idle``'s fallback: the lowest share of contended CPUs


def lower_priority(priority: str) -> None:
    """Put the calling thread, and every thread it starts afterwards (each inherits it),
    at ``priority`` (``idle`` or ``low``): call it before the collection starts any."""
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as error:
            log.warning("garbage collection runs at nice 19: SCHED_IDLE refused: %s", error)
            _nice()
        try:
            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        except (OSError, psutil.Error) as error:
            log.warning("garbage collection keeps its I/O priority: idle refused: %s", error)
    else:
        _nice()


def _nice() -> None:
    os.nice(max(0, NICENESS - os.nice(0)))
