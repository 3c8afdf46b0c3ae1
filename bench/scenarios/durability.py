"""Scenario 6: durable pushes — what flushing before the 201 costs, against the disk.

Each round measures in turn, on the largest blob: the disk's own durable write speed
(write the blob's size to a new file in the scratch directory, then ``fdatasync``: the
least a durable push must wait for), then for the monolithic and the chunked push
portside flushing (``storage.filesystem.fsync: true``, the default), portside not flushing
(``false``) and the reference registry, each on its own store. As in scenario 1, the blob
is removed from the store and dirty pages are flushed (``sync``, untimed) before each
measurement. Ratios per round: durable push / disk durable write (the issue's target:
within 10%, i.e. >= 0.9) and durable / non-durable push (what flushing costs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import BlobFile
from bench.plan import format_size
from bench.results import Metric, Target
from bench.scenarios.blobs import REPO, blob_path, mb_per_second, settle
from bench.servers import PORTSIDE, REFERENCE, Server, registry_server

GROUP = "6. durable push"
_PIECE = 4 * 1024 * 1024
WITHIN_DISK = Target(">= 0.9x the disk's durable write", min_value=0.9)


def durable_write_rate(directory: Path, size: int) -> float:
    """MB/s of writing ``size`` bytes to a new file and ``fdatasync``-ing it."""
    piece = os.urandom(_PIECE)
    path = directory / "durable-write-test"
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while written < size:
            written += os.write(fd, piece[: size - written])
        os.fdatasync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return size / elapsed / 1e6


async def run_durability(ctx: Context) -> list[Metric]:
    blob = ctx.largest_blob
    label = format_size(blob.size).replace(" ", "")
    no_fsync = {**ctx.plan.portside_env, "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false"}
    servers: dict[str, Server] = {}
    for kind, name, env in (
        ("durable", PORTSIDE, ctx.plan.portside_env),
        ("nondurable", PORTSIDE, no_fsync),
        ("reference", REFERENCE, None),
    ):
        workdir = ctx.new_dir(f"durability-{kind}")
        server = registry_server(name, workdir, workdir / "root", None, env, ctx.plan.portside_tree)
        servers[kind] = await ctx.lab.start(server)
    try:
        return await _measure(ctx, servers, blob, label)
    finally:
        for server in servers.values():
            await ctx.lab.stop(server)


def _metric(
    key: str,
    title: str,
    unit: str = "MB/s",
    *,
    note: str = "",
    plotted: bool = True,
    target: Target | None = None,
) -> Metric:
    return Metric(key, title, unit, GROUP, note=note, plotted=plotted, target=target)


async def _measure(
    ctx: Context, servers: dict[str, Server], blob: BlobFile, label: str
) -> list[Metric]:
    size = format_size(blob.size)
    disk = _metric(
        f"disk_durable_write_{label}",
        f"disk: write + fdatasync, {size}",
        note="not a server: the disk itself, shown in the portside column",
        plotted=False,
    )
    metrics = [disk]
    async with new_session() as session:
        clients = {kind: RegistryClient(session, s.url) for kind, s in servers.items()}

        def monolithic(kind: str) -> Callable[[], Awaitable[float]]:
            async def push() -> float:
                started = time.perf_counter()
                await clients[kind].push_file(REPO, blob.path, blob.size, blob.digest)
                return mb_per_second(blob.size, started)

            return push

        def chunked(kind: str) -> Callable[[], Awaitable[float]]:
            async def push() -> float:
                started = time.perf_counter()
                await clients[kind].push_file_chunked(
                    REPO, blob.path, blob.size, blob.digest, ctx.plan.chunk_size
                )
                return mb_per_second(blob.size, started)

            return push

        pushes = {"monolithic": monolithic, "chunked": chunked}
        durable, nondurable, within_disk, cost = {}, {}, {}, {}
        for style in pushes:
            durable[style] = _metric(
                f"push_{style}_durable_{label}",
                f"blob push, {style}, flushed before 201, {size}",
                note="portside with storage.filesystem.fsync: true (the default)",
            )
            nondurable[style] = _metric(
                f"push_{style}_nondurable_{label}",
                f"blob push, {style}, not flushed, {size}",
                note="portside with storage.filesystem.fsync: false",
                plotted=False,
            )
            within_disk[style] = _metric(
                f"durable_over_disk_{style}_{label}",
                f"durable {style} push / disk durable write, {size}",
                "x",
                target=WITHIN_DISK,
                plotted=False,
            )
            cost[style] = _metric(
                f"durable_over_nondurable_{style}_{label}",
                f"durable / non-durable {style} push, {size}",
                "x",
                plotted=False,
            )
            metrics += [durable[style], nondurable[style], within_disk[style], cost[style]]

        for _ in range(ctx.plan.rounds):
            await settle()
            disk_rate = await asyncio.to_thread(durable_write_rate, ctx.workdir, blob.size)
            disk.add_value(PORTSIDE, disk_rate)
            for style, push in pushes.items():
                rates: dict[str, float] = {}
                for kind, server in servers.items():
                    await asyncio.to_thread(shutil.rmtree, blob_path(server, blob.digest), True)
                    await settle()
                    sample = await ctx.lab.sample(server, push(kind))
                    rates[kind] = sample.value
                    target = nondurable[style] if kind == "nondurable" else durable[style]
                    target.add(server.name, sample)
                within_disk[style].add_value(PORTSIDE, rates["durable"] / disk_rate)
                cost[style].add_value(PORTSIDE, rates["durable"] / rates["nondurable"])
    return metrics
