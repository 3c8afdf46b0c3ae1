"""Several samples of each server in one round, interleaved A B B A, summarised per round.

One sample of each server per round (A B) hands the first slot, and whatever the machine
did just before it, to one server: measured that way, the S3 scenario's redirected pull,
where neither registry does any work, read 0.82x and 0.98x in two quiet runs. Here each
round takes ``per_server`` samples of each server in A B B A order (repeated), so each
server is first of a pair as often as second and a drift that is linear over the round
costs both the same; the round's value for a server is the median of its samples.
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from bench.measure import Lab, attempt
from bench.results import Metric, Sample
from bench.servers import Server

log = logging.getLogger("bench")
T = TypeVar("T")


def abba(servers: Sequence[T], per_server: int) -> list[T]:
    """``servers`` (two) in A B B A order until each occurs ``per_server`` times (even:
    only then is each as often first of a pair as second)."""
    if len(servers) != 2 or per_server < 2 or per_server % 2:
        raise ValueError("A B B A needs two servers and an even number of samples each")
    first, second = servers
    order: list[T] = []
    for index in range(per_server):
        order += [first, second] if index % 2 == 0 else [second, first]
    return order


def summary(samples: Sequence[Sample]) -> Sample:
    """One round's figure from its samples: medians, and the highest peak RSS."""
    return Sample(
        value=statistics.median(s.value for s in samples),
        peak_rss_mib=max(s.peak_rss_mib for s in samples),
        server_cores=statistics.median(s.server_cores for s in samples),
        client_cores=statistics.median(s.client_cores for s in samples),
        other_cores=statistics.median(s.other_cores for s in samples),
    )


async def interleaved(
    lab: Lab,
    servers: Sequence[Server],
    metric: Metric,
    run: Callable[[Server], Awaitable[float]],
    per_server: int,
    round_number: int,
    warm_up: Callable[[Server], Awaitable[object]] | None = None,
) -> None:
    """One round of ``metric``: ``warm_up`` of each server (not recorded), then
    ``per_server`` samples of each, A B B A, and each server's summary added to the
    metric. A failure marks that server's metric failed (as ``measure.alternate`` does)
    and the round goes on without it."""
    if warm_up is not None:
        for server in servers:
            await attempt(metric, server, functools.partial(warm_up, server))
    samples: dict[str, list[Sample]] = {server.name: [] for server in servers}
    for server in abba(servers, per_server):
        sample = await attempt(
            metric, server, functools.partial(lab.sample, server, functools.partial(run, server))
        )
        if sample is not None:
            samples[server.name].append(sample)
    for server in servers:
        taken = samples[server.name]
        if server.name in metric.unavailable or not taken:
            continue
        metric.add(server.name, summary(taken))
        log.info(
            "round %d %-40s %-9s %10.1f %s (median of %s)",
            round_number + 1,
            metric.title,
            server.name,
            metric.values[server.name][-1],
            metric.unit,
            ", ".join(f"{s.value:.1f}" for s in taken),
        )
