"""Measuring: the running servers, one sample at a time, and rounds that alternate them.

A sample resets the server's peak RSS, runs the measured operation, then reads the peak
and the CPU time each party used: the server, this client (with the wrk/ab/curl it waited
for), and everything else on the machine — on a shared machine, other people's work.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from bench import procstat
from bench.results import Metric, Sample
from bench.servers import Server

log = logging.getLogger("bench")

# What a failing measurement may raise (RegistryResponseError, LoadError and a refused token
# are RuntimeErrors): it marks that server's metric failed, and the run goes on.
T = TypeVar("T")
MEASUREMENT_ERRORS = (RuntimeError, aiohttp.ClientError, TimeoutError, OSError)


class Lab:
    """The servers this run started, so that their CPU time is never counted as noise."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

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

    async def sample(self, server: Server, operation: Callable[[], Awaitable[float]]) -> Sample:
        server.reset_peak_rss()
        before = [s.cpu_seconds() for s in self.servers]
        busy, own = procstat.machine_busy_seconds(), procstat.own_cpu_seconds()
        started = time.perf_counter()
        value = await operation()
        wall = time.perf_counter() - started
        servers_cpu = [s.cpu_seconds() - b for s, b in zip(self.servers, before, strict=True)]
        client = procstat.own_cpu_seconds() - own
        other = procstat.machine_busy_seconds() - busy - client - sum(servers_cpu)
        return Sample(
            value=value,
            peak_rss_mib=server.peak_rss_mib(),
            server_cores=servers_cpu[self.servers.index(server)] / wall,
            client_cores=client / wall,
            other_cores=max(0.0, other / wall),
        )


@dataclass(frozen=True)
class Step:
    """One metric's measurement: ``run`` returns the value; ``prepare`` runs untimed first."""

    metric: Metric
    run: Callable[[Server], Awaitable[float]]
    prepare: Callable[[Server], Awaitable[None]] | None = None


async def alternate(
    lab: Lab, servers: Sequence[Server], rounds: int, steps: Sequence[Step]
) -> None:
    """Each round, each step, each server in turn (A B A B): drift hits both alike."""
    for round_number in range(rounds):
        for step in steps:
            for server in servers:

                async def measured(step: Step = step, server: Server = server) -> Sample:
                    if step.prepare is not None:
                        await step.prepare(server)
                    return await lab.sample(server, functools.partial(step.run, server))

                sample = await attempt(step.metric, server, measured)
                if sample is None:
                    continue
                step.metric.add(server.name, sample)
                log.info(
                    "round %d %-40s %-9s %10.1f %s",
                    round_number + 1,
                    step.metric.title,
                    server.name,
                    sample.value,
                    step.metric.unit,
                )


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
