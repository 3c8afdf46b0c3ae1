"""Measuring: the running servers, one sample at a time, and rounds that alternate them.

A sample resets the server's peak RSS, runs the measured operation, then reads the peak
and the CPU time each party used: the server, this client (with the wrk/ab/curl it waited
for), and everything else on the machine — on a shared machine, other people's work —
with the hypervisor's steal and a machine-speed probe just before and after
(``bench.disturbance``). A round whose samples were disturbed can be measured again.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from bench import procstat
from bench.disturbance import Judge, SpeedSampler, cpu_times, steal_share
from bench.results import Metric, Sample
from bench.servers import Server

log = logging.getLogger("bench")

# What a failing measurement may raise (RegistryResponseError, LoadError and a refused token
# are RuntimeErrors): it marks that server's metric failed, and the run goes on.
T = TypeVar("T")
MEASUREMENT_ERRORS = (RuntimeError, aiohttp.ClientError, TimeoutError, OSError)


class Lab:
    """The servers this run started, so that their CPU time is never counted as noise."""

    def __init__(self, judge: Judge | None = None) -> None:
        self.servers: list[Server] = []
        self.judge = judge or Judge()

    async def start(self, server: Server) -> Server:
        await server.start()
        self.servers.append(server)
        return server

    async def stop(self, server: Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
        await server.stop()

    async def stop_all(self) -> None:
        for server in list(self.servers):
            await self.stop(server)

    async def sample(
        self,
        server: Server,
        operation: Callable[[], Awaitable[float]],
        helpers: Sequence[int] = (),
    ) -> Sample:
        """``operation``'s value with what it cost and what disturbed it; ``helpers``:
        processes that are part of the measurement (a collection beside the server),
        whose CPU is not counted as others'."""
        before_probe = self.judge.probe()
        server.reset_peak_rss()
        before = [s.cpu_seconds() for s in self.servers]
        helpers_before = sum(procstat.cpu_seconds(pid) for pid in helpers)
        processes = procstat.every_process_cpu()
        busy, own, times = procstat.machine_busy_seconds(), procstat.own_cpu_seconds(), cpu_times()
        started = time.perf_counter()
        with SpeedSampler() as sampler:
            value = await operation()
        wall = time.perf_counter() - started
        # The machine's counters first, at the window's end: the scans of /proc below
        # cost this process CPU that belongs to no window.
        busy_after, own_after, times_after = (
            procstat.machine_busy_seconds(),
            procstat.own_cpu_seconds(),
            cpu_times(),
        )
        helpers_cpu = sum(procstat.cpu_seconds(pid) for pid in helpers) - helpers_before
        servers_cpu = [s.cpu_seconds() - b for s, b in zip(self.servers, before, strict=True)]
        ours = {pid for s in self.servers for pid in procstat.process_tree(s.pid)}
        ours |= set(procstat.process_tree(os.getpid())) | set(helpers)
        processes_after = procstat.every_process_cpu()
        busiest = procstat.busiest_others(processes, processes_after, ours, wall)
        kernel = procstat.kernel_threads_seconds(processes, processes_after)
        client = own_after - own
        # The kernel's threads are not others': quietly, their work (a journal commit, a
        # collection's unlinks written back) is mostly the measured servers'.
        other = busy_after - busy - client - sum(servers_cpu) - helpers_cpu - kernel
        steal = steal_share(times, times_after)
        speed = self.judge.speed((before_probe, sampler.speed(), self.judge.probe()))
        return Sample(
            value=value,
            peak_rss_mib=server.peak_rss_mib(),
            server_cores=servers_cpu[self.servers.index(server)] / wall,
            client_cores=client / wall,
            other_cores=max(0.0, other / wall),
            steal=steal,
            speed=speed,
            busiest_others=busiest,
            seconds=wall,
            kernel_cores=kernel / wall,
        )


@dataclass(frozen=True)
class Step:
    """One metric's measurement: ``run`` returns the value; ``prepare`` runs untimed first."""

    metric: Metric
    run: Callable[[Server], Awaitable[float]]
    prepare: Callable[[Server], Awaitable[None]] | None = None


async def alternate(
    lab: Lab, servers: Sequence[Server], rounds: int, steps: Sequence[Step], retries: int = 0
) -> None:
    """Each round, each step, each server in turn, the order reversed every other round
    (A B, B A: over two rounds each server is first as often, so a drift that is linear
    over them costs both alike, and each round's ratio is of two adjacent samples). A
    step's turn with a disturbed sample is discarded and measured again, up to
    ``retries`` times (``repeat_disturbed``)."""
    for round_number in range(rounds):
        order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
        for step in steps:

            async def turn(step: Step = step, order: list[Server] = order) -> dict[Server, Sample]:
                taken: dict[Server, Sample] = {}
                for server in order:

                    async def measured(server: Server = server) -> Sample:
                        if step.prepare is not None:
                            await step.prepare(server)
                        return await lab.sample(server, functools.partial(step.run, server))

                    sample = await attempt(step.metric, server, measured)
                    if sample is not None:
                        taken[server] = sample
                return taken

            taken = await repeat_disturbed(lab.judge, step.metric, turn, retries)
            for server, sample in taken.items():
                step.metric.add(server.name, sample)
                log.info(
                    "round %d %-40s %-9s %10.1f %s",
                    round_number + 1,
                    step.metric.title,
                    server.name,
                    sample.value,
                    step.metric.unit,
                )


K = TypeVar("K")


async def repeat_disturbed(
    judge: Judge,
    metric: Metric,
    turn: Callable[[], Awaitable[dict[K, Sample]]],
    retries: int,
) -> dict[K, Sample]:
    """``turn``'s samples once none of them was disturbed (``judge.reasons``): a disturbed
    turn is discarded whole, so that the servers' samples stay adjacent, its reasons
    counted on ``metric``, and measured again; after ``retries`` such repeats the last is
    kept, and counted as kept disturbed."""
    for number in range(retries + 1):
        taken = await turn()
        reasons = sorted({r for s in taken.values() for r in judge.reasons(s.disturbance)})
        if not reasons:
            return taken
        if number == retries:
            metric.keep_disturbed()
            log.info("%s: kept disturbed after %d repeats (%s)", metric.key, retries, reasons)
            return taken
        metric.discard(reasons)
        log.info("%s: discarded and measured again (%s)", metric.key, "; ".join(reasons))
    raise AssertionError("unreachable")


async def attempt(
    metric: Metric, server: Server, operation: Callable[[], Awaitable[T]]
) -> T | None:
    """``operation``'s result; None, with the server's metric marked failed, if it fails
    or the metric already failed on that server (the run goes on without it)."""
    if server.name in metric.unavailable:
        return None
    try:
        return await operation()
    except MEASUREMENT_ERRORS as error:
        log.error("%s on %s failed: %s", metric.key, server.name, error)
        metric.unavailable[server.name] = f"failed: {error}"
        return None


def rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else float("inf")
