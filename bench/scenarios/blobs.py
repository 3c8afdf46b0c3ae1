"""Scenario 1: push a large blob monolithic and in chunks, pull it verified — MB/s.

Before each push the blob is removed from the server's store, so every push writes a new
blob, and dirty pages are flushed (``sync``, untimed) so that one server's writeback does
not slow the next measurement. Peak RSS is taken per blob size, to show it flat in size.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Sequence

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import BlobFile
from bench.measure import Step, alternate
from bench.plan import format_size
from bench.results import Metric, Target
from bench.servers import Server

REPO = "bench/blob"
GROUP = "1. blob push and pull"
PUSH_TARGET = Target(">= 1.5x the reference", min_speedup=1.5)
PULL_TARGET = Target(">= 1.0x the reference", min_speedup=1.0)
RSS_TARGET = Target("< 150 MiB, flat in the blob size", max_value=150)


def blob_path(server: Server, digest: str) -> str:
    """Where both registries keep a blob: Distribution's layout."""
    if server.root is None:
        raise RuntimeError(f"{server.name} has no storage root")
    algorithm, hex_digest = digest.split(":", 1)
    return str(server.root / "docker/registry/v2/blobs" / algorithm / hex_digest[:2] / hex_digest)


async def settle() -> None:
    """Flush dirty pages, so that writeback of the last write is not the next one's cost."""
    await asyncio.to_thread(os.sync)


def mb_per_second(size: int, started: float) -> float:
    return size / (time.perf_counter() - started) / 1e6


async def run_blobs(ctx: Context, servers: Sequence[Server], blob: BlobFile) -> list[Metric]:
    label = format_size(blob.size)
    chunk = ctx.plan.chunk_size

    def metric(key: str, title: str, target: Target | None = None, note: str = "") -> Metric:
        return Metric(
            f"{key}_{label.replace(' ', '')}",
            f"{title} {label}",
            "MB/s",
            GROUP,
            target=target,
            note=note,
        )

    monolithic = metric(
        "push_monolithic",
        "blob push, monolithic,",
        PUSH_TARGET,
        "POST, then one PUT with the whole blob",
    )
    chunked = metric(
        "push_chunked",
        "blob push, chunked,",
        PUSH_TARGET,
        f"POST, a PATCH per {format_size(chunk)} with Content-Range, PUT",
    )
    pull = metric(
        "pull_verified",
        "blob pull, verified,",
        PULL_TARGET,
        "the client hashes while receiving (see client limits)",
    )
    pull_raw = metric(
        "pull_unverified",
        "blob pull, not verified,",
        note="the client only counts bytes: what the server can send",
    )
    async with new_session() as session:
        clients = {server.name: RegistryClient(session, server.url) for server in servers}

        async def remove_and_settle(server: Server) -> None:
            await asyncio.to_thread(shutil.rmtree, blob_path(server, blob.digest), True)
            await settle()

        async def settle_only(server: Server) -> None:
            await settle()

        async def push(server: Server) -> float:
            started = time.perf_counter()
            await clients[server.name].push_file(REPO, blob.path, blob.size, blob.digest)
            return mb_per_second(blob.size, started)

        async def push_chunked(server: Server) -> float:
            started = time.perf_counter()
            await clients[server.name].push_file_chunked(
                REPO, blob.path, blob.size, blob.digest, chunk
            )
            return mb_per_second(blob.size, started)

        async def pull_verified(server: Server) -> float:
            started = time.perf_counter()
            await clients[server.name].pull_verify(REPO, blob.digest, blob.size)
            return mb_per_second(blob.size, started)

        async def pull_unverified(server: Server) -> float:
            started = time.perf_counter()
            await clients[server.name].pull_discard(REPO, blob.digest, blob.size)
            return mb_per_second(blob.size, started)

        steps = [
            Step(monolithic, push, remove_and_settle),
            Step(chunked, push_chunked, remove_and_settle),
            Step(pull, pull_verified, settle_only),
            Step(pull_raw, pull_unverified, settle_only),
        ]
        await alternate(ctx.lab, servers, ctx.plan.rounds, steps)
    measured = [monolithic, chunked, pull, pull_raw]
    return [*measured, peak_rss_metric(label, measured)]


def peak_rss_metric(label: str, measured: Sequence[Metric]) -> Metric:
    """Per round, the highest peak RSS of any push or pull of this size."""
    rss = Metric(
        f"peak_rss_{label.replace(' ', '')}",
        f"peak RSS, push and pull {label}",
        "MiB",
        GROUP,
        higher_is_better=False,
        target=RSS_TARGET,
        note="sum of VmHWM over the server's processes; reset before each step",
    )
    servers = {name for m in measured for name in m.peak_rss_mib}
    for name in sorted(servers):
        per_step = [m.peak_rss_mib.get(name, []) for m in measured]
        for round_peaks in zip(*per_step, strict=False):
            rss.add_value(name, max(round_peaks))
    return rss
