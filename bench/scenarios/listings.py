"""Scenario 5: catalog and tag-list pages in a large store — latency of one page.

Stores are seeded on disk (bench.seed) at two sizes, ten times apart, so that the figures
show whether a page's latency grows with the store; each store is served by both
registries in turn (they only read it). Each value is the median latency of sequential
requests over one keep-alive connection. The reference registry 2.8.2 does not paginate
tag lists (it ignores ``n`` and ``last``): its "page" of tags is the whole list, which is
what its users get.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.measure import Step, alternate
from bench.results import Metric, Target
from bench.seed import SeededStore, seed_store
from bench.servers import PORTSIDE, REFERENCE, Server

GROUP = "5. catalog and tag listing"
GROWTH_TARGET = Target("flat: <= 1.5x when the store is 10x larger", max_value=1.5)
WARM_UP = 2


async def _latency_ms(client: RegistryClient, path: str, requests: int) -> float:
    for _ in range(WARM_UP):
        await client.get(path)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        await client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _pages(store: SeededStore, page: int) -> list[tuple[str, str, str]]:
    """(key, title, path) of the pages measured in a store."""
    # The last full page: it ends where the listing does, so a walk from the start pays
    # for the whole store, while the page itself is as long as the first one.
    if page >= min(len(store.repositories), len(store.tags)):
        raise ValueError(f"a page of {page} would hold a whole store: seed more")
    last_repo = store.repositories[-page - 1]
    last_tag = store.tags[-page - 1]
    return [
        ("catalog_first", "catalog, first page", f"/v2/_catalog?n={page}"),
        ("catalog_last", "catalog, last page", f"/v2/_catalog?n={page}&last={last_repo}"),
        ("tags_first", "tag list, first page", f"/v2/{store.tagged}/tags/list?n={page}"),
        (
            "tags_last",
            "tag list, last page",
            f"/v2/{store.tagged}/tags/list?n={page}&last={last_tag}",
        ),
    ]


async def run_listings(ctx: Context) -> list[Metric]:
    plan = ctx.plan
    by_scale: list[list[Metric]] = []
    for repositories, tags in plan.listing_scales:
        # One store both registries serve in turn: they only read it here.
        root = ctx.new_dir(f"listings-{repositories}") / "root"
        store = await asyncio.to_thread(seed_store, root, repositories, tags)
        roots = dict.fromkeys((PORTSIDE, REFERENCE), root)
        scale = f"{repositories} repositories, {tags} tags"
        metrics = []
        steps = []
        async with new_session() as session:
            servers = await ctx.start_pair(roots)
            for key, title, path in _pages(store, plan.page_size):
                metric = Metric(
                    f"{key}_{repositories}r_{tags}t",
                    f"{title} (n={plan.page_size}), {scale}",
                    "ms",
                    GROUP,
                    higher_is_better=False,
                )
                metrics.append(metric)

                async def measure(server: Server, path: str = path) -> float:
                    return await _latency_ms(
                        RegistryClient(session, server.url), path, plan.latency_requests
                    )

                steps.append(Step(metric, measure))
            await alternate(ctx.lab, servers, plan.rounds, steps)
            for server in servers:
                await ctx.lab.stop(server)
        by_scale.append(metrics)
    return [*(m for metrics in by_scale for m in metrics), *growth(by_scale)]


def growth(by_scale: Sequence[Sequence[Metric]]) -> list[Metric]:
    """How much a page's latency grew from the smallest store to the largest, per round."""
    if len(by_scale) < 2:
        return []
    derived = []
    for small, large in zip(by_scale[0], by_scale[-1], strict=True):
        title = small.title.split(" (", 1)[0]
        metric = Metric(
            f"growth_{small.key.rsplit('_', 2)[0]}",
            f"{title}: latency growth, larger/smaller store",
            "x",
            GROUP,
            higher_is_better=False,
            target=GROWTH_TARGET,
            plotted=False,
        )
        for server in sorted(set(small.values) & set(large.values)):
            for before, after in zip(small.values[server], large.values[server], strict=False):
                metric.add_value(server, after / before)
        derived.append(metric)
    return derived
