"""Scenario 6, online part: what online garbage collection costs the serving registry.

On a copy of scenario 6's store whose untagged manifests were deleted (their revision
links removed: 2 in 5 manifests, their configs and layers now garbage), portside serves
manifest GETs by tag (wrk, 32 connections) twice per round, alternating which comes
first: once idle, once while it collects by itself (``storage.gc.interval`` set so the
first collection begins just before the measurement; the default one-hour grace, the
store older than that). Both runs have the same settings
otherwise (log level included). The busy run counts only if its first collection, which
has the whole store's garbage to delete, began before the measurement and had not
finished when it ended (its "garbage collection deleted" line is not logged yet): else
the store is too small for the load generator's run, and the scenario says so. The
metric is the throughput while collecting, in percent of the idle throughput (target:
at least 90%).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
from pathlib import Path

import aiohttp

from bench.context import Context
from bench.loadgen import run_wrk
from bench.results import Metric, Target
from bench.servers import PORTSIDE, Server, registry_server

GROUP = "6. garbage collection"
# Seconds from start-up to the measurement, in both runs, per 10,000 manifests of the
# store (the start-up walk's length follows its size). The busy run's first collection
# (the one with the store's garbage to delete) begins LEAD seconds before the
# measurement: begun any earlier, it ended before a quiet machine's measurement did.
SETTLE = 8.0
LEAD = 0.5
DONE = "garbage collection deleted"  # logged when a collection that deleted something ends
URL_PATH = "/v2/org00/repo0000/manifests/t2"  # a tagged manifest of the seeded store


def make_garbage(root: Path) -> int:
    """Delete the revision links of the seeded store's untagged manifests (as a client's
    DELETE would); how many."""
    repositories = root / "docker/registry/v2/repositories"
    removed = 0
    for revisions in repositories.glob("*/*/_manifests/revisions/sha256"):
        tagged = {
            (tag / "current/link").read_text()
            for tag in (revisions.parent.parent / "tags").iterdir()
        }
        for revision in list(revisions.iterdir()):
            if f"sha256:{revision.name}" not in tagged:
                shutil.rmtree(revision)
                removed += 1
    return removed


async def _get_rate(ctx: Context, server: Server) -> float:
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm-up: first-request costs outside the run
            async with session.get(server.url + URL_PATH) as response:
                await response.read()
    result = await run_wrk(
        server.url + URL_PATH, duration=ctx.plan.rate_seconds, connections=ctx.plan.connections
    )
    return result.requests_per_second


async def run_gc_online(ctx: Context, seeded: Path) -> Metric:
    metric = Metric(
        "gc_online_get",
        "manifest GET throughput while the registry collects, % of idle",
        "%",
        GROUP,
        target=Target(">= 90% (online collection costs < 10%)", min_value=90.0),
        plotted=False,
    )
    idle_rates: list[float] = []
    busy_rates: list[float] = []
    uncovered = 0
    for round_number in range(ctx.plan.rounds):
        for collecting in (False, True) if round_number % 2 == 0 else (True, False):
            workdir = ctx.new_dir("gc-online")
            root = workdir / "root"
            # Hard links: a real copy of 50,000 files, and removing it, took minutes per
            # run on a disk mounted with discard. Nothing here rewrites a file in place
            # (GETs write nothing; collection only creates and unlinks), so the seed
            # stays intact; the collection's unlinks then free no blocks, which spares it
            # the discards of a real deletion (a cost to the collector, not to GETs).
            await asyncio.to_thread(shutil.copytree, seeded, root, copy_function=os.link)
            await asyncio.to_thread(make_garbage, root)
            env = {**ctx.plan.portside_env, "REGISTRY_LOG_LEVEL": "info"}
            settle = max(2 * LEAD, SETTLE * ctx.plan.gc_manifests / 10_000)
            if collecting:
                interval = round(1000 * (settle - LEAD))
                env["REGISTRY_STORAGE_GC_INTERVAL"] = f"{interval}ms"
            server = registry_server(PORTSIDE, workdir, root, None, env, ctx.plan.portside_tree)
            await ctx.lab.start(server)
            try:
                # Both runs wait alike: at start-up the registry walks the whole store in
                # a thread for killed writers' temporaries (py-spy: a fifth of its samples
                # under wrk), a cost that overlapped only the idle runs' measurements
                # when the busy runs alone waited. The first collection begins at 1 s.
                await asyncio.sleep(settle)
                rate = await _get_rate(ctx, server)
                if collecting and DONE in server.log_path.read_text(errors="replace"):
                    uncovered += 1  # the collection ended before the measurement did
            finally:
                await ctx.lab.stop(server)
            (busy_rates if collecting else idle_rates).append(rate)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    for idle, busy in zip(idle_rates, busy_rates, strict=True):
        metric.add_value(PORTSIDE, 100.0 * busy / idle)
    metric.note = (
        f"idle {statistics.median(idle_rates):.0f} req/s, "
        f"collecting {statistics.median(busy_rates):.0f} req/s (medians)"
    )
    if uncovered:
        metric.note += (
            f"; in {uncovered} of {len(busy_rates)} rounds the collection ended before the "
            "measurement did: a larger store (the plan's gc_manifests) is needed"
        )
    return metric
