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

The collection runs at idle CPU and I/O priority (``registry/gc_priority.py``), so it
yields to the registry and the load generator and takes longer the busier the machine
is: after the measurement the busy run waits (up to ``FINISH_WAIT``) for that first
collection to end, and a second metric is its length, start to end. A collection that
stopped (it lost its lease, starved for seconds) or had not ended by then is counted and
named in the note: a cost figure is worth nothing if the collection never gets done.
"""

from __future__ import annotations

import asyncio
import os
import re
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
# The whole line, with the run's length from the child's spawn to its answer.
DONE_LINE = re.compile(r"garbage collection deleted \d+ blobs .* in ([0-9.]+)s")
STOPPED = ("garbage collection stopped", "garbage collection failed")  # logged, then retried
FINISH_WAIT = 300.0  # seconds the busy run waits, after the measurement, for the end
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


async def _collection_end(log_path: Path) -> tuple[float | None, int]:
    """Wait for the first collection's end: (its length in seconds, or None if it had not
    ended after FINISH_WAIT; how many runs stopped or failed before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINISH_WAIT
    while True:
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        stopped = sum(text.count(line) for line in STOPPED)
        found = DONE_LINE.search(text)
        if found:
            return float(found.group(1)), stopped
        if loop.time() > deadline:
            return None, stopped
        await asyncio.sleep(0.5)


async def run_gc_online(ctx: Context, seeded: Path) -> list[Metric]:
    metric = Metric(
        "gc_online_get",
        "manifest GET throughput while the registry collects, % of idle",
        "%",
        GROUP,
        target=Target(">= 90% (online collection costs < 10%)", min_value=90.0),
        plotted=False,
    )
    length = Metric(
        "gc_online_seconds",
        "online collection's length while the registry serves manifest GETs",
        "s",
        GROUP,
        higher_is_better=False,
        plotted=False,
    )
    idle_rates: list[float] = []
    busy_rates: list[float] = []
    uncovered = 0
    stopped = 0  # runs that stopped (lost their lease) or failed before the first ended
    unfinished = 0  # busy runs whose collection had not ended after FINISH_WAIT
    loads: list[float] = []  # the machine's 1-minute load average after each measurement
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
                loads.append(os.getloadavg()[0])
                if collecting:
                    if DONE in server.log_path.read_text(errors="replace"):
                        uncovered += 1  # the collection ended before the measurement did
                    seconds, failures = await _collection_end(server.log_path)
                    stopped += failures
                    if seconds is None:
                        unfinished += 1
                    else:
                        length.add_value(PORTSIDE, seconds)
            finally:
                await ctx.lab.stop(server)
            (busy_rates if collecting else idle_rates).append(rate)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    for idle, busy in zip(idle_rates, busy_rates, strict=True):
        metric.add_value(PORTSIDE, 100.0 * busy / idle)
    metric.note = (
        f"idle {statistics.median(idle_rates):.0f} req/s, "
        f"collecting {statistics.median(busy_rates):.0f} req/s (medians); load average "
        f"{min(loads):.1f}-{max(loads):.1f} after the measurements"
    )
    if uncovered:
        metric.note += (
            f"; in {uncovered} of {len(busy_rates)} rounds the collection ended before the "
            "measurement did: a larger store (the plan's gc_manifests) is needed"
        )
    if stopped or unfinished:
        length.note = (
            f"{stopped} runs stopped or failed and were retried; in {unfinished} of "
            f"{len(busy_rates)} rounds the collection had not ended {FINISH_WAIT:.0f}s "
            "after the measurement"
        )
        metric.note += "; " + length.note
    return [metric, length]
