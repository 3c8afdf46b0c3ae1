"""What the kernel knows about a server process and its children: peak RSS and CPU time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


def _every_stat() -> Iterator[tuple[int, str, list[str]]]:
    """Each live process's pid, command name and the fields of its ``stat`` after the
    name (index 0 is field 3 of stat(5))."""
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        # The command name may hold spaces and parentheses: fields start after the last ")".
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        yield int(entry.name), name, stat.rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (worker processes count towards a server)."""
    parents: dict[int, list[int]] = {}
    for child, _, fields in _every_stat():
        parents.setdefault(int(fields[1]), []).append(child)
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(parents.get(current, []))
    return tree


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(pid: int) -> float:
    """The sum of VmHWM over the tree: an upper bound of the tree's peak resident memory."""
    return sum(_status_kib(p, "VmHWM") for p in process_tree(pid)) / 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM from the current RSS (``clear_refs`` 5), so a peak is per scenario.

    False when the kernel refuses; peaks then cover the process's whole life.
    """
    ok = True
    for p in process_tree(pid):
        try:
            (_PROC / str(p) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the tree's live processes and of the children they
    have reaped: a child that ends between two readings (a collection's walk of the
    store, a short-lived helper) moves its time into its parent's cutime, where the
    live processes' utime alone lost it, and the window counted it as others' CPU."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = (_PROC / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime and cstime are fields 14-17 of stat(5); index 0 here is
        # field 3. A live process's utime excludes its children; cutime holds only
        # those it has waited for (ended ones): nothing is counted twice.
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _TICKS


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User + system CPU time of one thread (``tid == pid``: the main thread)."""
    fields = (_PROC / str(pid) / "task" / str(tid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu_seconds() -> float:
    """CPU time of this process and of its children it has waited for (wrk, ab, curl)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (``/proc/stat``), to see other load."""
    fields = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    values = [int(v) for v in fields[:8]]
    return (sum(values) - values[3] - values[4]) / _TICKS


KTHREADD = 2  # the kernel threads' parent: kworker, ksoftirqd, jbd2 are its children


@dataclass(frozen=True)
class ProcessCpu:
    name: str  # the command name (``comm``)
    seconds: float  # user + system CPU of all its threads
    kernel: bool  # a kernel thread (kthreadd or its child)
    started: int  # ticks after boot: with the pid, which process this is (pids are reused)


def every_process_cpu() -> dict[int, ProcessCpu]:
    """Each live process's command name and user + system CPU seconds (its threads')."""
    found: dict[int, ProcessCpu] = {}
    for pid, name, fields in _every_stat():
        parent = int(fields[1])
        found[pid] = ProcessCpu(
            name,
            (int(fields[11]) + int(fields[12])) / _TICKS,
            KTHREADD in (pid, parent),
            int(fields[19]),  # starttime, field 22 of stat(5)
        )
    return found


def _used(before: dict[int, ProcessCpu], pid: int, now: ProcessCpu) -> float:
    earlier = before.get(pid)
    # A process that started meanwhile counts from zero. Not by name: a kworker's name
    # changes with the work it does, an exec changes a process's.
    return now.seconds - (earlier.seconds if earlier and earlier.started == now.started else 0.0)


def kernel_threads_seconds(before: dict[int, ProcessCpu], after: dict[int, ProcessCpu]) -> float:
    """CPU the kernel's own threads used between two readings of ``every_process_cpu``
    (journal commits, writeback, deferred network work: much of it on behalf of the
    measured servers, and they live as long as the machine, so none is missed)."""
    return sum(_used(before, pid, now) for pid, now in after.items() if now.kernel)


def busiest_others(
    before: dict[int, ProcessCpu],
    after: dict[int, ProcessCpu],
    ours: set[int],
    seconds: float,
    count: int = 3,
) -> str:
    """The user processes not in ``ours`` that used the most CPU between two readings of
    ``every_process_cpu``, as ``name cores, ...`` (those above 0.01 cores)."""
    used: dict[str, float] = {}
    for pid, now in after.items():
        if pid in ours or now.kernel or seconds <= 0:
            continue
        used[now.name] = used.get(now.name, 0.0) + _used(before, pid, now) / seconds
    top = sorted(((cores, name) for name, cores in used.items() if cores >= 0.01), reverse=True)
    return ", ".join(f"{name} {cores:.2f}" for cores, name in top[:count])
