"""What disturbed one measured window, and whether that is too much to keep it.

On the benchmark's VM an unchanged server's throughput moved by a third between windows
of one run with nothing else running. Three things can slow a window down without the
server changing, and each is recorded around every measured window:

- **steal**: time the hypervisor gave the VM's CPUs to someone else (``/proc/stat``'s
  ``steal`` column), as a share of the window's CPU time over all cores;
- **others' CPU**: what processes other than the benchmark and its servers used, in
  cores (measured by ``bench.measure.Lab.sample``);
- **the machine's speed**: a fixed 64 KiB of SHA-256 hashing (about 45 µs) on each core
  in turn, the probing thread pinned there: five times just before and just after the
  window, and twice per core every 100 ms during it, the second timed (``SpeedSampler``,
  0.2% of a core).
  A slow probe shows what neither counter sees: a CPU slowed by the host or by what
  shares its caches. On this VM the fastest probe stays at 1.3-1.4 GB/s, and under
  load a server's requests per CPU second followed the probe (correlation +0.38 and
  +0.46 in two runs: docs/performance.md, "The machine's drift").

A :class:`Judge` compares them with thresholds (docs/performance.md, "Method", says why
these) and names what was too much; the caller discards the window and measures again.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_STAT = Path("/proc/stat")
_TICKS = os.sysconf("SC_CLK_TCK")
PROBE_BYTES = 64 * 1024  # hashed per repeat: about 45 µs on one core here
PROBE_REPEATS = 5  # per core; the median repeat is the core's time
# /proc/stat counts in ticks (10 ms): in a 0.1 s window one tick of another process is
# 0.10 cores. A share is judged only when it amounts to more than this many ticks.
COUNTED_TICKS = 2
SAMPLE_INTERVAL = 0.1  # seconds between the probes of each core during a window
CALIBRATION_PROBES = 8  # before the first judgement, so that "the best" is not one probe

# Reasons, as the report counts them.
STEAL = "steal"
OTHERS = "others' CPU"
SLOW = "slow probe"


@dataclass(frozen=True)
class CpuTimes:
    """Seconds since boot over all cores (``/proc/stat``'s first line)."""

    total: float
    steal: float


def cpu_times() -> CpuTimes:
    fields = [int(v) for v in _STAT.read_text().splitlines()[0].split()[1:9]]
    # user nice system idle iowait irq softirq steal
    return CpuTimes(total=sum(fields) / _TICKS, steal=fields[7] / _TICKS)


def steal_share(before: CpuTimes, after: CpuTimes) -> float:
    """The share of the interval's CPU time (all cores) the hypervisor stole."""
    total = after.total - before.total
    return (after.steal - before.steal) / total if total > 0 else 0.0


_PROBE_DATA = os.urandom(PROBE_BYTES)


def _hash_time() -> float:
    started = time.perf_counter()
    hashlib.sha256(_PROBE_DATA).digest()
    return time.perf_counter() - started


def _core_time() -> float:
    """The median of PROBE_REPEATS timings of hashing PROBE_BYTES on the current core."""
    return statistics.median(_hash_time() for _ in range(PROBE_REPEATS))


def probe() -> float:
    """The machine's speed now: MB/s of SHA-256 on its slowest core, the calling thread
    pinned to each core in turn (and given back its cores after)."""
    allowed = os.sched_getaffinity(0)
    slowest = 0.0
    try:
        for core in sorted(allowed):
            os.sched_setaffinity(0, {core})
            slowest = max(slowest, _core_time())
    finally:
        os.sched_setaffinity(0, allowed)
    return PROBE_BYTES / slowest / 1e6


class SpeedSampler:
    """Probes each core once every SAMPLE_INTERVAL on a thread while a window runs (a
    context manager); ``speed`` is then the MB/s of the slowest core's median probe."""

    def __init__(self) -> None:
        self._times: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speed-sampler", daemon=True)

    def _run(self) -> None:
        cores = sorted(os.sched_getaffinity(0))
        while not self._stop.wait(SAMPLE_INTERVAL):
            for core in cores:
                os.sched_setaffinity(0, {core})  # this thread only
                # The first hash on a core after a sleep or a move runs at 50-60% of the
                # speed (caches cold): time the second.
                _hash_time()
                self._times.setdefault(core, []).append(_hash_time())

    def __enter__(self) -> SpeedSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def speed(self) -> float | None:
        """None when the window was too short for a probe."""
        if not self._times:
            return None
        return PROBE_BYTES / max(statistics.median(t) for t in self._times.values()) / 1e6


@dataclass(frozen=True)
class Disturbance:
    """What the machine did around one window."""

    steal: float  # share of all cores' time stolen during the window (0-1)
    other_cores: float  # cores used by processes other than the bench and its servers
    speed: float  # the slowest probe of the window against the run's best (1.0: as fast)
    busiest_others: str = ""  # ``name cores, ...`` of the other processes that used most
    seconds: float = 0.0  # the window's length (0: unknown, judged by the shares alone)

    def above_counting(self, share: float, cores: int) -> bool:
        """Whether ``share`` of ``cores`` over the window is more than COUNTED_TICKS of
        the kernel's 10 ms ticks: less is within what /proc/stat can count."""
        return not self.seconds or share * cores * self.seconds * _TICKS > COUNTED_TICKS


@dataclass(frozen=True)
class Thresholds:
    """Above these a window is discarded (docs/performance.md, "Method", says why)."""

    max_steal: float = 0.02
    max_other_cores: float = 0.10
    min_speed: float = 0.85  # a probe against the run's best probe


@dataclass
class Judge:
    """The run's thresholds and its best probe so far (the machine's speed when
    undisturbed); the probes around each window are measured through it."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    best: float = 0.0

    def probe(self) -> float:
        if self.best == 0.0:
            for _ in range(CALIBRATION_PROBES):
                self.best = max(self.best, probe())
        speed = probe()
        self.best = max(self.best, speed)
        return speed

    def speed(self, probes: Sequence[float | None]) -> float:
        """The slowest of a window's probes (before, during, after; None: not taken)
        against the run's best (1.0: as fast)."""
        taken = [p for p in probes if p is not None]
        return min(taken) / self.best if taken and self.best > 0 else 1.0

    def reasons(self, disturbance: Disturbance) -> list[str]:
        """What was too much in this window, as ``reason: figure``; empty when it counts."""
        limits = self.thresholds
        found = []
        cores = os.cpu_count() or 1
        if disturbance.steal > limits.max_steal and disturbance.above_counting(
            disturbance.steal, cores
        ):
            found.append(f"{STEAL}: {100 * disturbance.steal:.1f}%")
        if disturbance.other_cores > limits.max_other_cores and disturbance.above_counting(
            disturbance.other_cores, 1
        ):
            found.append(
                f"{OTHERS}: {disturbance.other_cores:.2f} cores"
                + (f" ({disturbance.busiest_others})" if disturbance.busiest_others else "")
            )
        if disturbance.speed < limits.min_speed:
            found.append(f"{SLOW}: {100 * disturbance.speed:.0f}% of the best")
        return found
