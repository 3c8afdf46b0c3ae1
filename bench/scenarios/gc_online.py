"""Scenario 6, online part: what online garbage collection costs the serving registry.

On a copy of scenario 6's store whose untagged manifests were deleted (their revision
links removed: 2 in 5 manifests, their configs and layers now garbage), portside serves
manifest GETs by tag (wrk, 32 connections) in runs of the same length that alternate
idle, busy, idle, ... idle (``--rounds`` busy runs, one more idle): a busy run collects
by itself (``storage.gc.interval`` set so the first collection begins just before the
measurement; the default one-hour grace, the store older than that). The runs have the
same settings otherwise (log level included). The metric is each busy run's throughput
in percent of the mean of the idle runs beside it (target: at least 90%): the machine's
drift between runs, which swung a figure against one idle run measured first from 67%
to 121% on a quiet machine, cancels where it is linear over the three.

A busy run counts only if its first collection, which has the whole store's garbage to
delete, began before the measurement and had not finished when it ended (its "garbage
collection deleted" line is not logged yet); the others are left out of the figure and
named in the note (all of them: the store is too small for the load generator's run).

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
from dataclasses import dataclass
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


def neighbour_ratios(runs: list[tuple[bool, float]]) -> list[float]:
    """Each busy run's throughput in percent of the mean of the idle runs beside it (the
    one before and the one after; at an end, the one there is), in the order run.

    Against one baseline measured first, a drift of the machine between the idle run and
    the busy one went into the figure whole (121% and 67.3% in two quiet runs of the same
    code); the mean of the neighbours cancels a drift that is linear over the three."""
    ratios = []
    for index, (busy, rate) in enumerate(runs):
        if not busy:
            continue
        beside = [
            runs[i][1] for i in (index - 1, index + 1) if 0 <= i < len(runs) and not runs[i][0]
        ]
        if not beside or min(beside) <= 0:
            raise ValueError(f"busy run {index} has no idle run with a throughput beside it")
        ratios.append(100.0 * rate / statistics.fmean(beside))
    return ratios


def schedule(rounds: int) -> list[bool]:
    """Whether each run collects: idle, busy, idle, ... idle, with ``rounds`` busy runs
    (at least one), so that every busy run has an idle run on each side."""
    busy = max(1, rounds)
    return [index % 2 == 1 for index in range(2 * busy + 1)]


async def _measure(ctx: Context, seeded: Path, collecting: bool) -> Window:
    """One run on a fresh copy of the store: its throughput, and for a busy run whether
    the collection overlapped the whole measurement and how long it took."""
    workdir = ctx.new_dir("gc-online")
    root = workdir / "root"
    # Hard links: a real copy of 50,000 files, and removing it, took minutes per run
    # on a disk mounted with discard. Nothing here rewrites a file in place (GETs write
    # nothing; collection only creates and unlinks), so the seed stays intact; the
    # collection's unlinks then free no blocks, which spares it the discards of a real
    # deletion (a cost to the collector, not to GETs).
    await asyncio.to_thread(shutil.copytree, seeded, root, copy_function=os.link)
    await asyncio.to_thread(make_garbage, root)
    env = {**ctx.plan.portside_env, "REGISTRY_LOG_LEVEL": "info"}
    settle = max(2 * LEAD, SETTLE * ctx.plan.gc_manifests / 10_000)
    if collecting:
        interval = round(1000 * (settle - LEAD))
        env["REGISTRY_STORAGE_GC_INTERVAL"] = f"{interval}ms"
    server = registry_server(PORTSIDE, workdir, root, None, env, ctx.plan.portside_tree)
    await ctx.lab.start(server)
    window = Window(collecting)
    try:
        # Both runs wait alike: at start-up the registry walks the whole store in a
        # thread for killed writers' temporaries (py-spy: a fifth of its samples under
        # wrk), a cost that overlapped only the idle runs' measurements when the busy
        # runs alone waited.
        await asyncio.sleep(settle)
        window.rate = await _get_rate(ctx, server)
        window.load = os.getloadavg()[0]
        if collecting:
            # The collection ended before the measurement did: not all of it was busy.
            window.covered = DONE not in server.log_path.read_text(errors="replace")
            window.seconds, window.stopped = await _collection_end(server.log_path)
    finally:
        await ctx.lab.stop(server)
    await asyncio.to_thread(shutil.rmtree, workdir, True)
    return window


@dataclass
class Window:
    """One measurement: a registry serving manifest GETs, collecting or not."""

    collecting: bool
    rate: float = 0.0  # requests per second
    load: float = 0.0  # the machine's 1-minute load average after it
    covered: bool = True  # busy: the collection ran for the whole measurement
    seconds: float | None = None  # busy: the collection's length (None: not ended)
    stopped: int = 0  # busy: runs that stopped or failed before the first ended


async def run_gc_online(ctx: Context, seeded: Path) -> list[Metric]:
    metric = Metric(
        "gc_online_get",
        "manifest GET throughput while the registry collects, % of the idle runs beside",
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
    windows = [await _measure(ctx, seeded, collecting) for collecting in schedule(ctx.plan.rounds)]
    busy = [w for w in windows if w.collecting]
    # Only busy runs whose collection overlapped all of the measurement count; the
    # others stay in the sequence (as neighbours' neighbours they are not used).
    ratios = neighbour_ratios([(w.collecting, w.rate) for w in windows])
    counted = [r for r, w in zip(ratios, busy, strict=True) if w.covered]
    for ratio in counted or ratios:
        metric.add_value(PORTSIDE, ratio)
    for window in busy:
        if window.seconds is not None:
            length.add_value(PORTSIDE, window.seconds)
    idle_rates = [w.rate for w in windows if not w.collecting]
    loads = [w.load for w in windows]
    metric.note = (
        f"runs idle, busy, idle, ...: each busy run against the mean of the idle runs "
        f"beside it ({', '.join(f'{r:.1f}%' for r in ratios)}; the runs in order "
        f"{', '.join(f'{w.rate:.0f}' for w in windows)} req/s); idle "
        f"{statistics.median(idle_rates):.0f} req/s, collecting "
        f"{statistics.median(w.rate for w in busy):.0f} req/s (medians); load average "
        f"{min(loads):.1f}-{max(loads):.1f} after the measurements"
    )
    uncovered = len(busy) - sum(w.covered for w in busy)
    if uncovered:
        metric.note += (
            f"; in {uncovered} of {len(busy)} busy runs the collection ended before the "
            "measurement did"
            + (
                " (left out of the figure)"
                if counted
                else ": every one, so the figure is not a cost while collecting; a "
                "larger store (the plan's gc_manifests) is needed"
            )
        )
    stopped = sum(w.stopped for w in busy)
    unfinished = sum(1 for w in busy if w.seconds is None)
    if stopped or unfinished:
        length.note = (
            f"{stopped} runs stopped or failed and were retried; in {unfinished} of "
            f"{len(busy)} busy runs the collection had not ended {FINISH_WAIT:.0f}s "
            "after the measurement"
        )
        metric.note += "; " + length.note
    return [metric, length]
