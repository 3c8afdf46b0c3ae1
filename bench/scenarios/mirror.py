"""Scenario 9: the pull-through cache — a large blob pulled through a portside mirror.

Two portside registries: the upstream (an ordinary hosted registry holding the blob) and
a mirror of it (``REGISTRY_PROXY_REMOTEURL``), started afresh on an empty store each
round; then:

- *cold*: the blob pulled, verified, through the mirror (fetched from the upstream while
  it is streamed and written), against the same pull straight from the upstream;
- *warm*: the blob pulled again through the mirror (now from its storage), against the
  same direct pull from the upstream, which is a normal local pull from a registry.

In both tables the ``portside`` column is the mirror and the ``reference`` column the
direct pull from the upstream: the ratio is the mirror's share of the direct speed. A
third row gives the server's CPU time per MB of the cold pull against the upstream's of
the direct one: on a machine shared with other work, the figure the throughputs' swings
leave readable (at a few MiB it is below the clock's 10 ms resolution).

Two yardsticks bound what any mirror could do here (``bench.forwarder``): the same cold
pull through the cheapest verifying cache (SHA-256, a file write and a send per piece,
in threads, nothing else) and through the cheapest forwarder of all (``splice``: no hash,
nothing stored), each against the same direct pull; a last row gives their CPU per MB.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import ClientSession

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.measure import MEASUREMENT_ERRORS
from bench.plan import format_size
from bench.results import Metric, Sample, Target
from bench.scenarios.blobs import mb_per_second, settle
from bench.servers import PORTSIDE, REFERENCE, Server, free_port, registry_server

REPO = "bench/mirror"
GROUP = "9. pull-through cache"
COLD_TARGET = Target(">= 0.8x a direct pull from the upstream", min_speedup=0.8)
WARM_TARGET = Target(">= 0.95x a local pull", min_speedup=0.95)


async def run_mirror(ctx: Context) -> list[Metric]:
    blob = ctx.largest_blob
    label = format_size(blob.size)
    cold = Metric(
        f"mirror_cold_pull_{label.replace(' ', '')}",
        f"cold pull through the mirror {label}",
        "MB/s",
        GROUP,
        target=COLD_TARGET,
        note="portside: through the mirror, uncached; reference: straight from the upstream",
    )
    warm = Metric(
        f"mirror_warm_pull_{label.replace(' ', '')}",
        f"warm pull through the mirror {label}",
        "MB/s",
        GROUP,
        target=WARM_TARGET,
        note="portside: through the mirror, cached; reference: a local pull from the upstream",
    )
    cpu = Metric(
        f"mirror_cold_cpu_per_mb_{label.replace(' ', '')}",
        f"server CPU per MB, cold pull {label}",
        "ms/MB",
        GROUP,
        higher_is_better=False,
        note="portside: the mirror during a cold pull; reference: the upstream during the "
        "direct pull. Less sensitive to other load than the throughputs",
    )
    ceilings = {
        mode: Metric(
            f"mirror_ceiling_{mode}_pull_{label.replace(' ', '')}",
            f"cold pull through the cheapest {what} {label}",
            "MB/s",
            GROUP,
            note=f"portside column: bench/forwarder.py {mode} ({how}); reference: the "
            "direct pull. A bound for any mirror on this machine, not portside",
        )
        for mode, what, how in (
            ("cache", "verifying cache", "SHA-256, a file write and a send per piece"),
            ("splice", "forwarder", "socket to socket by splice, no hash, nothing stored"),
        )
    }
    ceiling_cpu = Metric(
        f"mirror_ceiling_cpu_per_mb_{label.replace(' ', '')}",
        f"yardstick CPU per MB, cold pull {label}",
        "ms/MB",
        GROUP,
        higher_is_better=False,
        note="portside column: the cheapest verifying cache; reference: the splice forwarder",
    )
    upstream_root = ctx.new_dir("mirror-upstream") / "root"
    upstream = await ctx.lab.start(
        registry_server(
            PORTSIDE,
            upstream_root.parent,
            upstream_root,
            None,
            ctx.plan.portside_env,
            ctx.plan.portside_tree,
        )
    )
    mirror_env = {**ctx.plan.portside_env, "REGISTRY_PROXY_REMOTEURL": upstream.url}
    try:
        async with new_session() as session:
            direct = RegistryClient(session, upstream.url)
            await direct.push_file(REPO, blob.path, blob.size, blob.digest)

            async def pull(client: RegistryClient) -> float:
                started = time.perf_counter()
                await client.pull_verify(REPO, blob.digest, blob.size)
                return mb_per_second(blob.size, started)

            for round_number in range(ctx.plan.rounds):
                # A new mirror on an empty store each round: nothing cached, no descriptor
                # remembered from the round before.
                root = ctx.new_dir(f"mirror-{round_number}") / "root"
                mirror = await ctx.lab.start(
                    registry_server(
                        PORTSIDE, root.parent, root, None, mirror_env, ctx.plan.portside_tree
                    )
                )
                through = RegistryClient(session, mirror.url)
                try:
                    await settle()
                    cold_sample = await ctx.lab.sample(mirror, functools.partial(pull, through))
                    cold.add(PORTSIDE, cold_sample)
                    cpu.add_value(PORTSIDE, cpu_per_mb(cold_sample))
                    await settle()
                    direct_sample = await ctx.lab.sample(upstream, functools.partial(pull, direct))
                    cold.add(REFERENCE, direct_sample)
                    cpu.add_value(REFERENCE, cpu_per_mb(direct_sample))
                    warm.add(REFERENCE, direct_sample)
                    await settle()
                    warm.add(
                        PORTSIDE, await ctx.lab.sample(mirror, functools.partial(pull, through))
                    )
                    for mode, metric in ceilings.items():
                        await settle()
                        sample = await _through_forwarder(
                            ctx, mode, upstream.url, root.parent, session, pull
                        )
                        metric.add(PORTSIDE, sample)
                        metric.add(REFERENCE, direct_sample)
                        side = PORTSIDE if mode == "cache" else REFERENCE
                        ceiling_cpu.add_value(side, cpu_per_mb(sample))
                except MEASUREMENT_ERRORS as error:
                    for metric in (cold, warm, cpu, *ceilings.values(), ceiling_cpu):
                        metric.unavailable[PORTSIDE] = f"failed: {error}"
                    break
                finally:
                    await ctx.lab.stop(mirror)
                    await asyncio.to_thread(shutil.rmtree, root.parent, True)
    finally:
        await ctx.lab.stop(upstream)
    return [cold, warm, cpu, *ceilings.values(), ceiling_cpu]


async def _through_forwarder(
    ctx: Context,
    mode: str,
    upstream_url: str,
    workdir: Path,
    session: ClientSession,
    pull: Callable[[RegistryClient], Awaitable[float]],
) -> Sample:
    """A cold pull through ``bench.forwarder`` in ``mode``, started for it alone."""
    port = free_port()
    spool = workdir / f"forwarder-{mode}"
    spool.mkdir()
    forwarder = await ctx.lab.start(
        Server(
            f"forwarder-{mode}",
            [sys.executable, "-m", "bench.forwarder", mode, str(port), upstream_url, str(spool)],
            port,
            workdir / f"forwarder-{mode}.log",
        )
    )
    try:
        return await ctx.lab.sample(
            forwarder, functools.partial(pull, RegistryClient(session, forwarder.url))
        )
    finally:
        await ctx.lab.stop(forwarder)


def cpu_per_mb(sample: Sample) -> float:
    """The server's CPU time per MB moved, in ms: cores used over MB/s."""
    return sample.server_cores / sample.value * 1000 if sample.value else 0.0
