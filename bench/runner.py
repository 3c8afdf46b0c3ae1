"""One benchmark run: data, machine limits, then each scenario's servers and rounds.

Phases, each with servers started for it on loopback:
1. plain registries (portside and the reference, each on its own store): scenarios 1-3;
2. tokenauth, then both registries again on the same stores with ``auth.token``: scenario 4;
3. both registries on seeded stores, small then large: scenario 5;
4. portside flushing, portside not flushing and the reference, each on a new store:
   scenario 6;
5. later scenarios start what they need themselves (9: an upstream and its mirror; 10:
   nginx, serving the first phase's portside store, beside the plain registries; 11: a
   single-node Ceph RADOS Gateway and both registries on it; 12, only when named: three
   registries, two tokenauth replicas, nginx, moto and Redis).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import SmallImage, write_blob_file
from bench.disturbance import Judge, Thresholds
from bench.loadgen import missing_tools
from bench.machine import machine_limits
from bench.measure import Lab
from bench.plan import Plan
from bench.results import Metric
from bench.scenarios import requests
from bench.scenarios.blobs import run_blobs
from bench.scenarios.durability import run_durability
from bench.scenarios.flood import run_flood
from bench.scenarios.gc import run_gc, run_gc_online_alone
from bench.scenarios.images import run_images
from bench.scenarios.listings import run_listings
from bench.scenarios.mirror import run_mirror
from bench.scenarios.pulls import missing as pulls_missing
from bench.scenarios.pulls import run_pulls
from bench.scenarios.s3 import run_s3
from bench.scenarios.soak import run_chaos_soak
from bench.scenarios.tokens import (
    ISSUANCE_WORKERS,
    run_issuance,
    run_tokens,
    start_tokenauth,
)
from bench.servers import PORTSIDE, REFERENCE, reference_available

log = logging.getLogger("bench")


@dataclass
class Outcome:
    metrics: list[Metric] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # phases that stopped early

    @property
    def failures(self) -> list[str]:
        return self.errors + [
            f"{metric.key} on {server}: {reason}"
            for metric in self.metrics
            for server, reason in metric.unavailable.items()
            if reason.startswith("failed")
        ]

    async def phase(self, ctx: Context, name: str, work: Awaitable[list[Metric]]) -> None:
        """Run one phase; if it breaks, record why and go on with the next (a long run
        should not lose every figure to one failure)."""
        try:
            self.metrics += await work
        except Exception as error:
            log.exception("the %s phase failed", name)
            self.errors.append(f"{name} phase: {error!r}")
            await ctx.lab.stop_all()


def _skipped(plan: Plan) -> dict[str, str]:
    skipped: dict[str, str] = {}
    missing = missing_tools()
    if missing:
        for scenario in ("requests", "tokens", "gc_online"):
            if scenario in plan.scenarios:
                skipped[scenario] = "missing Debian packages: " + ", ".join(missing)
    if "pulls" in plan.scenarios and pulls_missing():
        skipped["pulls"] = "missing Debian packages: " + ", ".join(pulls_missing())
    return skipped


async def run(plan: Plan, logs: Path) -> Outcome:
    if not reference_available():
        raise RuntimeError("the reference registry is missing: apt-get install docker-registry")
    outcome = Outcome(skipped=_skipped(plan))
    wanted = {s for s in plan.scenarios if s not in outcome.skipped}
    workdir = Path(tempfile.mkdtemp(prefix="portside-bench-"))
    judge = Judge(Thresholds(max_other_cores=plan.max_other_cores))
    ctx = Context(plan, Lab(judge), workdir)
    try:
        data = ctx.new_dir("data")
        # The soak makes its own images: run alone, it needs none of the blob files.
        sizes = sorted(plan.blob_sizes) if wanted - {"soak"} else []
        for size in sizes:
            log.info("writing a %d-byte blob", size)
            ctx.blobs[size] = await asyncio.to_thread(
                write_blob_file, data / f"blob-{size}", size, size
            )
        if "machine" in wanted:
            log.info("measuring the machine's limits")
            outcome.limits = await machine_limits(ctx.largest_blob, data, plan.rounds)
        roots = {name: ctx.new_dir(name) / "root" for name in (PORTSIDE, REFERENCE)}
        image = requests.the_image()
        if wanted & {"blobs", "requests", "images", "pulls"}:
            await outcome.phase(ctx, "plain", _plain(ctx, roots, image, wanted))
        if "tokens" in wanted:
            await outcome.phase(ctx, "token", _token(ctx, roots, image))
        if "listings" in wanted:
            await outcome.phase(ctx, "listing", run_listings(ctx))
        if "durability" in wanted:
            await outcome.phase(ctx, "durability", run_durability(ctx))
        if "gc" in wanted:
            await outcome.phase(ctx, "garbage collection", run_gc(ctx))
        elif "gc_online" in wanted:  # only the online part (gc includes it)
            await outcome.phase(ctx, "online garbage collection", run_gc_online_alone(ctx))
        if "flood" in wanted:
            await outcome.phase(ctx, "login flood", run_flood(ctx))
        if "mirror" in wanted:
            await outcome.phase(ctx, "pull-through cache", run_mirror(ctx))
        if "s3" in wanted:
            await outcome.phase(ctx, "S3 (RGW)", run_s3(ctx))
        if "soak" in wanted:
            await outcome.phase(ctx, "chaos soak", run_chaos_soak(ctx))
    finally:
        await ctx.lab.stop_all()
        await asyncio.to_thread(_keep_logs, workdir, logs)
        if plan.keep:
            log.info("kept the scratch directory %s", workdir)
        else:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    return outcome


async def _plain(
    ctx: Context, roots: dict[str, Path], image: SmallImage, wanted: set[str]
) -> list[Metric]:
    metrics: list[Metric] = []
    servers = await ctx.start_pair(roots)
    try:
        if "blobs" in wanted:
            for size in sorted(ctx.blobs):
                metrics += await run_blobs(ctx, servers, ctx.blobs[size])
        if "requests" in wanted:
            async with new_session() as session:
                for server in servers:
                    client = RegistryClient(session, server.url)
                    await requests.push_image(client, requests.REPO, requests.TAG, image)
            metrics += await requests.run_requests(ctx, servers, image)
        if "images" in wanted:
            metrics += await run_images(ctx, servers)
        if "pulls" in wanted:
            metrics += await run_pulls(ctx, servers)
    finally:
        for server in servers:
            await ctx.lab.stop(server)
    return metrics


async def _token(ctx: Context, roots: dict[str, Path], image: SmallImage) -> list[Metric]:
    tokens = await start_tokenauth(ctx)
    metrics = [await run_issuance(ctx, tokens)]
    metrics += await run_tokens(ctx, roots, image, tokens)
    await ctx.lab.stop(tokens.server)
    workers = await start_tokenauth(ctx, workers=ISSUANCE_WORKERS)
    metrics.append(await run_issuance(ctx, workers, ISSUANCE_WORKERS))
    await ctx.lab.stop(workers.server)
    return metrics


LOG_TAIL = 1024 * 1024  # tokenauth writes two lines per token: keep the end of each log


def _keep_logs(workdir: Path, logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    for log_file in workdir.rglob("*.log"):
        with log_file.open("rb") as source:
            source.seek(max(0, log_file.stat().st_size - LOG_TAIL))
            tail = source.read()
        (logs / f"{log_file.parent.name}-{log_file.name}").write_bytes(tail)


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
