"""Scenario 6: offline garbage collection of a large store, ``garbage-collect -m``.

A store of ``gc_manifests`` manifests and about five times as many blobs is written
straight in Distribution's layout (as ``bench.seed`` does: a registry that had received
those pushes would hold exactly this), a hundred manifests per repository, each with its
own config and three layers; two manifests in five are untagged. Each round copies the
store once per collector, runs ``registry garbage-collect -m -q`` and the reference's
``docker-registry garbage-collect -m`` on their copies (alternating which goes first),
and records the wall time and the collector's peak RSS. Both must leave the same blobs.
The store is written two days old, so portside's default grace period (one hour) spares
nothing and its online protocol (docs/online-gc.md) runs in full; ``gc_online`` then
measures what collecting costs a serving registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.context import Context
from bench.loadgen import missing_tools
from bench.results import Metric, Sample, Target
from bench.scenarios.gc_online import run_gc_online
from bench.servers import PORTSIDE, REFERENCE, REFERENCE_BINARY, clean_environ, registry_config

GROUP = "6. garbage collection"
PER_REPOSITORY = 100
WRITTEN_AT = time.time() - 2 * 86400
LAYERS = 3


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(v2: Path, data: bytes) -> str:
    digest = _digest(data)
    hex_digest = digest[7:]
    directory = v2 / "blobs/sha256" / hex_digest[:2] / hex_digest
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").write_bytes(data)
    os.utime(directory / "data", (WRITTEN_AT, WRITTEN_AT))  # last referenced long ago
    return digest


def _link(directory: Path, digest: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "link").write_text(digest)


def seed_gc_store(root: Path, manifests: int) -> int:
    """Write the store; the number of blobs in it."""
    v2 = root / "docker/registry/v2"
    blobs = 0
    for index in range(manifests):
        repo = v2 / "repositories" / f"org{index // 10_000:02d}/repo{index // PER_REPOSITORY:04d}"
        config = _write_blob(v2, b'{"architecture":"amd64","os":"linux","n":%d}' % index)
        layers = [_write_blob(v2, b"layer %d of %d" % (n, index)) for n in range(LAYERS)]
        for digest in (config, *layers):
            _link(repo / "_layers/sha256" / digest[7:], digest)
        body = (
            b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
            b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s",'
            b'"size":64},"layers":[%s]}'
            % (
                config.encode(),
                b",".join(
                    b'{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",'
                    b'"digest":"%s","size":16}' % d.encode()
                    for d in layers
                ),
            )
        )
        manifest = _write_blob(v2, body)
        _link(repo / "_manifests/revisions/sha256" / manifest[7:], manifest)
        if index % 5 >= 2:  # three in five tagged
            tag = repo / "_manifests/tags" / f"t{index}"
            _link(tag / "current", manifest)
            _link(tag / "index/sha256" / manifest[7:], manifest)
        blobs += 2 + LAYERS
    return blobs


def _remaining_blobs(root: Path) -> int:
    return sum(1 for _ in (root / "docker/registry/v2/blobs").glob("*/*/*/data"))


# GNU time (Debian package ``time``) reports the peak RSS of the one process it forks and
# waits for. The benchmark's own wait4 cannot: a child inherits its parent's high-water
# mark across fork and exec (the kernel keeps the larger of the old and the new image's),
# so ru_maxrss of a collector started from the benchmark was the benchmark's own size.
GNU_TIME = "/usr/bin/time"


def _collect(command: list[str], config: Path, cwd: Path | None) -> tuple[float, float]:
    """Run one collector to completion: (seconds, its own peak RSS in MiB)."""
    if not Path(GNU_TIME).exists():
        raise RuntimeError(f"{GNU_TIME} is missing: install the Debian package time")
    peak_file = config.with_name("peak-rss-kib")
    started = time.perf_counter()
    process = subprocess.run(
        [
            *(GNU_TIME, "-f", "%M", "-o", str(peak_file)),
            *command,
            "garbage-collect",
            "-m",
            *(["-q"] if command[0] == sys.executable else []),
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_environ(),
        cwd=cwd,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        errors = process.stderr.decode(errors="replace")
        raise RuntimeError(f"{command[0]} garbage-collect failed: {errors[-500:]}")
    return elapsed, int(peak_file.read_text().split()[-1]) / 1024


async def run_gc(ctx: Context) -> list[Metric]:
    plan = ctx.plan
    seeded = ctx.new_dir("gc-seed") / "root"
    started = time.perf_counter()
    blobs = await asyncio.to_thread(seed_gc_store, seeded, plan.gc_manifests)
    seeding = time.perf_counter() - started
    seconds = Metric(
        "gc_seconds",
        f"garbage-collect -m, {plan.gc_manifests} manifests and {blobs} blobs",
        "s",
        GROUP,
        higher_is_better=False,
        target=Target(">= 5x faster than the reference", min_speedup=5.0),
        note=f"the store was written in {seeding:.1f}s",
    )
    rss = Metric(
        "gc_peak_rss",
        "garbage-collect -m: the collector's peak RSS",
        "MiB",
        GROUP,
        higher_is_better=False,
        target=Target("< 200 MB", max_value=200 / 1.048576),
        plotted=False,
    )
    commands = {PORTSIDE: [sys.executable, "-m", "registry"], REFERENCE: [REFERENCE_BINARY]}
    remaining: dict[str, int] = {}
    for round_number in range(plan.rounds):
        order = [PORTSIDE, REFERENCE] if round_number % 2 == 0 else [REFERENCE, PORTSIDE]
        for name in order:
            workdir = ctx.new_dir(f"gc-{name}")
            root = workdir / "root"
            await asyncio.to_thread(shutil.copytree, seeded, root)
            config = workdir / "config.yml"
            config.write_text(registry_config(root, 0))
            cwd = plan.portside_tree if name == PORTSIDE else None
            elapsed, peak = await asyncio.to_thread(_collect, commands[name], config, cwd)
            seconds.add(name, Sample(elapsed, peak, 0.0, 0.0, 0.0))
            rss.add_value(name, peak)
            remaining[name] = await asyncio.to_thread(_remaining_blobs, root)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    if remaining.get(PORTSIDE) != remaining.get(REFERENCE):
        raise RuntimeError(f"the collectors kept different numbers of blobs: {remaining}")
    if missing_tools():  # the online part measures with wrk
        return [seconds, rss]
    return [seconds, rss, *await run_gc_online(ctx, seeded)]


async def run_gc_online_alone(ctx: Context) -> list[Metric]:
    """``--scenarios gc_online``: only what online collection costs, on the same store."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            "the online part measures with wrk: apt-get install " + " ".join(missing)
        )
    seeded = ctx.new_dir("gc-seed") / "root"
    await asyncio.to_thread(seed_gc_store, seeded, ctx.plan.gc_manifests)
    return await run_gc_online(ctx, seeded)
