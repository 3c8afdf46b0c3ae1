"""Scenario 6, online part: what online garbage collection costs the serving registry.

One portside registry serves manifest GETs by tag (wrk, 32 connections) from a copy of
scenario 6's store, in short windows of the same length that alternate idle, busy,
idle, ... idle. Before each busy window every untagged manifest of the store loses its
revision links (as a client's DELETE would: their configs and layers become
garbage) and a collection starts beside the registry: ``registry garbage-collect
--low-priority``, the scheduled collection's own code at its priority
(``storage.gc.priority``, idle by default; ``registry/gc_priority.py``) with the default
one-hour grace (the store is two days old, so the online protocol runs in full). The
window begins LEAD seconds after the collection and counts only if the collection was
still running when it ended: a busy window lies wholly inside a collection. After each
collection, whatever it deleted is linked back from the seed, outside any window, so every
collection has the offline scenario's garbage (4,000 manifests, 20,000 blobs) however
many are measured again. Shares of the garbage were too little once collection got
faster: with a fifth each, collections took 3.5 s quietly and 4 of 5 windows of 3 s begun
0.5 s in outlived them.

The figure is the median of the counted busy windows in percent of the median of the
idle windows (target: at least 90%). One server for every window: separate servers for
idle and busy runs, each with its own start-up, spread the idle runs alone from 6,344 to
8,696 req/s on a quiet machine. The note lists each busy window against the mean of the
idle windows beside it, the collections' lengths, and the windows left out.

Each window carries what disturbed it (``bench.disturbance``: steal, others' CPU — the
collection's own is not others' — and the machine-speed probe around it); a disturbed
window is discarded and measured again (a busy one with a new collection and garbage of
its own), an idle one at most the plan's ``retries`` times, busy ones that many times over
the whole run; the note counts the discarded windows by reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.context import Context
from bench.disturbance import Judge
from bench.loadgen import run_wrk
from bench.results import Metric, Target
from bench.servers import PORTSIDE, Server, clean_environ, registry_server

log = logging.getLogger("bench")
GROUP = "6. garbage collection"
# Seconds from start-up to the first window per 10,000 manifests of the store: the
# registry walks the whole store for killed writers' temporaries at start-up.
SETTLE = 8.0
LEAD = 0.5  # seconds from a collection's start to its window's
WINDOW = 3  # seconds of each window (at most the plan's rate_seconds)
BUSY_WINDOWS = 5  # at least; the plan's rounds if more
URL_PATH = "/v2/org00/repo0000/manifests/t2"  # a tagged manifest of the seeded store
FINISH_WAIT = 300.0  # seconds a collection may take before the scenario gives up
LOST_LEASE = "lost its lease"  # a starved collection stops (CollectionBusy)


def untagged_revisions(root: Path) -> list[Path]:
    """The revision-link directories of the seeded store's untagged manifests."""
    repositories = root / "docker/registry/v2/repositories"
    untagged = []
    for revisions in sorted(repositories.glob("*/*/_manifests/revisions/sha256")):
        tagged = {
            (tag / "current/link").read_text()
            for tag in (revisions.parent.parent / "tags").iterdir()
        }
        untagged += [r for r in sorted(revisions.iterdir()) if f"sha256:{r.name}" not in tagged]
    return untagged


def restore(seeded: Path, root: Path) -> int:
    """Hard-link back into ``root`` every file of ``seeded`` that is missing there (what
    a collection deleted, and the revision links removed to make garbage), making the
    directories it needs; nothing present is touched (no attributes set, so the walk
    writes no inodes). Returns how many files were linked."""
    linked = 0
    for directory, _, files in os.walk(seeded):
        target = root / os.path.relpath(directory, seeded)
        if not target.is_dir():
            target.mkdir(parents=True)
        for name in files:
            destination = target / name
            if not os.path.lexists(destination):
                os.link(os.path.join(directory, name), destination)
                linked += 1
    return linked


def median_ratio(windows: list[Window]) -> float | None:
    """The median of the counted busy windows in percent of the median of the idle
    windows; None when no busy window counts."""
    busy = [w.rate for w in windows if w.counted]
    idle = [w.rate for w in windows if not w.collecting]
    if not busy or not idle or statistics.median(idle) <= 0:
        return None
    return 100.0 * statistics.median(busy) / statistics.median(idle)


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


@dataclass
class Window:
    """One measurement: a registry serving manifest GETs, collecting or not."""

    collecting: bool
    rate: float = 0.0  # requests per second
    load: float = 0.0  # the machine's 1-minute load average after it
    covered: bool = True  # busy: the collection ran for the whole window
    seconds: float = 0.0  # busy: the collection's length, start to end
    stopped: bool = False  # busy: the collection lost its lease and stopped
    disturbed: tuple[str, ...] = ()  # what disturbed it (kept only when no retry was left)
    attempts: int = 1  # how many times it was measured (the disturbed ones discarded)

    @property
    def counted(self) -> bool:
        """A busy window wholly inside a collection that did its work."""
        return self.collecting and self.covered and not self.stopped


def _label(window: Window) -> str:
    return (
        f"{window.rate:.0f}"
        + ("*" if window.collecting else "")
        + ("!" if window.disturbed else "")
    )


async def _idle_window(ctx: Context, server: Server) -> Window:
    sample = await ctx.lab.sample(server, functools.partial(_wrk, ctx, server))
    reasons = ctx.lab.judge.reasons(sample.disturbance)
    return Window(False, sample.value, os.getloadavg()[0], disturbed=tuple(reasons))


async def _wrk(ctx: Context, server: Server) -> float:
    duration = min(WINDOW, ctx.plan.rate_seconds)
    result = await run_wrk(
        server.url + URL_PATH, duration=duration, connections=ctx.plan.connections
    )
    return result.requests_per_second


async def _busy_window(
    ctx: Context, server: Server, config: Path, garbage: list[Path], seeded: Path, root: Path
) -> Window:
    """Make ``garbage``, start a collection, measure a window inside it, wait for its end,
    then put back from ``seeded`` what it deleted."""
    for revision in garbage:
        await asyncio.to_thread(shutil.rmtree, revision)
    window = Window(True)
    started = time.monotonic()
    collector = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "registry", "garbage-collect", "--low-priority", "-q"),
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_environ(ctx.plan.portside_env),
        cwd=ctx.plan.portside_tree,
    )
    try:
        await asyncio.sleep(LEAD)
        sample = await ctx.lab.sample(
            server, functools.partial(_wrk, ctx, server), helpers=[collector.pid]
        )
        window.rate = sample.value
        window.disturbed = tuple(ctx.lab.judge.reasons(sample.disturbance))
        window.load = os.getloadavg()[0]
        window.covered = collector.returncode is None
        _, errors = await asyncio.wait_for(collector.communicate(), FINISH_WAIT)
    finally:
        if collector.returncode is None:
            collector.kill()
            await collector.wait()
    window.seconds = time.monotonic() - started
    if collector.returncode != 0:
        text = errors.decode(errors="replace")
        if LOST_LEASE not in text:
            raise RuntimeError(f"garbage-collect failed: {text[-500:]}")
        # Starved at idle priority for seconds (a machine kept busy by other work): it
        # stopped, as the scheduled one would, to be retried. Not a whole collection, so
        # the window is left out.
        window.stopped = True
    await asyncio.to_thread(restore, seeded, root)
    return window


async def steady_window(
    judge: Judge, metric: Metric, measure: Callable[[], Awaitable[Window]], retries: int
) -> Window:
    """A window not disturbed (``Window.disturbed`` empty), measured again as long as it
    was and ``retries`` last; each discarded one is counted on ``metric``, and the last
    is kept if every attempt was disturbed (counted as kept disturbed)."""
    for number in range(retries + 1):
        window = await measure()
        window.attempts = number + 1
        if not window.disturbed:
            return window
        if number == retries:
            metric.keep_disturbed()
            return window
        metric.discard(list(window.disturbed))
        log.info("gc_online: window discarded (%s)", "; ".join(window.disturbed))
    raise AssertionError("unreachable")


async def run_gc_online(ctx: Context, seeded: Path) -> list[Metric]:
    metric = Metric(
        "gc_online_get",
        "manifest GET throughput while a collection runs, % of the idle windows (medians)",
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
    workdir = ctx.new_dir("gc-online")
    root = workdir / "root"
    # Hard links: a real copy of 50,000 files, and removing it, took minutes on a disk
    # mounted with discard. Nothing here rewrites a file in place (GETs write nothing;
    # collection only creates and unlinks), so the seed stays intact; the collection's
    # unlinks then free no blocks of files, which spares the collector some discards
    # (a cost to the collector, not to GETs).
    await asyncio.to_thread(shutil.copytree, seeded, root, copy_function=os.link)
    plan = schedule(max(BUSY_WINDOWS, ctx.plan.rounds))
    # Busy windows may be measured again ``retries`` times over the whole run; each
    # collection deletes every untagged manifest, a repeat included, since each busy
    # window restores the store after its collection.
    spare = ctx.plan.retries
    garbage = await asyncio.to_thread(untagged_revisions, root)
    env = {**ctx.plan.portside_env, "REGISTRY_LOG_LEVEL": "info"}
    server = registry_server(PORTSIDE, workdir, root, None, env, ctx.plan.portside_tree)
    config = workdir / f"{PORTSIDE}.yml"
    await ctx.lab.start(server)
    windows: list[Window] = []
    try:
        await asyncio.sleep(max(2 * LEAD, SETTLE * ctx.plan.gc_manifests / 10_000))
        async with aiohttp.ClientSession() as session:
            for _ in range(20):  # warm-up: first-request costs outside the windows
                async with session.get(server.url + URL_PATH) as response:
                    await response.read()

        async def busy_window() -> Window:
            return await _busy_window(ctx, server, config, garbage, seeded, root)

        for collecting in plan:
            if collecting:
                window = await steady_window(ctx.lab.judge, metric, busy_window, spare)
                spare -= window.attempts - 1
            else:
                measure = functools.partial(_idle_window, ctx, server)
                window = await steady_window(ctx.lab.judge, metric, measure, ctx.plan.retries)
            windows.append(window)
    finally:
        await ctx.lab.stop(server)
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    figure = median_ratio(windows)
    if figure is not None:
        metric.add_value(PORTSIDE, figure)
    busy = [w for w in windows if w.collecting]
    for window in busy:
        if not window.stopped:
            length.add_value(PORTSIDE, window.seconds)
    ratios = neighbour_ratios([(w.collecting, w.rate) for w in windows])
    loads = [w.load for w in windows]
    metric.note = (
        f"{len(busy)} busy {min(WINDOW, ctx.plan.rate_seconds)} s windows, each begun "
        f"{LEAD} s into a collection, between idle ones, on one server; idle "
        f"{statistics.median(w.rate for w in windows if not w.collecting):.0f} req/s, "
        f"collecting {statistics.median(w.rate for w in busy if w.counted or figure is None):.0f}"
        f" req/s (medians); the windows in order "
        f"{', '.join(_label(w) for w in windows)} req/s "
        f"(* collecting, ! kept disturbed); each busy one against its idle neighbours "
        f"{', '.join(f'{r:.1f}%' for r in ratios)}; collections "
        f"{', '.join(f'{w.seconds:.1f}' for w in busy)} s; load average "
        f"{min(loads):.1f}-{max(loads):.1f} after the windows"
    )
    if metric.disturbance_text():
        metric.note += f"; windows {metric.disturbance_text()}"
    stopped = sum(1 for w in busy if w.stopped)
    if stopped:
        metric.note += (
            f"; {stopped} of {len(busy)} collections lost their lease (starved at idle "
            "priority) and stopped: their windows are left out"
        )
    uncovered = sum(1 for w in busy if not w.covered)
    if uncovered:
        metric.note += (
            f"; in {uncovered} of {len(busy)} busy windows the collection ended first "
            "(left out of the figure)"
            + ("" if figure is not None else ": every one, so there is no figure")
        )
    return [metric, length]
