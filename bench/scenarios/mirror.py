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
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import time

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.measure import MEASUREMENT_ERRORS
from bench.plan import format_size
from bench.results import Metric, Sample, Target
from bench.scenarios.blobs import mb_per_second, settle
from bench.servers import PORTSIDE, REFERENCE, registry_server

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
                except MEASUREMENT_ERRORS as error:
                    for metric in (cold, warm, cpu):
                        metric.unavailable[PORTSIDE] = f"failed: {error}"
                    break
                finally:
                    await ctx.lab.stop(mirror)
                    await asyncio.to_thread(shutil.rmtree, root.parent, True)
    finally:
        await ctx.lab.stop(upstream)
    return [cold, warm, cpu]


def cpu_per_mb(sample: Sample) -> float:
    """The server's CPU time per MB moved, in ms: cores used over MB/s."""
    return sample.server_cores / sample.value * 1000 if sample.value else 0.0
