"""Scenario 11: blob push and pull with both registries on the same S3, a single-node
Ceph RADOS Gateway (``scripts/rgw-single-node``), in one bucket — MB/s.

Two phases: pulls streamed by the registry (the reference with ``redirect.disable``),
then with redirects on, where both registries answer a blob GET with a presigned URL and
the client fetches the bytes from RGW. Before each push the blob's objects are removed
from the bucket, so every push writes a new blob, and both registries pull the blob the
last push wrote: the very same object. The gateway's CPU shows as other_cores:
it is not one of the servers under test. The servers' order reverses each round, and a
pull's note gives each registry's CPU per MB pulled.

RGW's garbage (what a push leaves behind) is collected before every push and before the
pulls, and each round's pull figure is the median of ``PULLS`` pulls of each registry in
A B B A order after one unrecorded pull of each (``bench.interleave``): the redirected
pull, which neither registry serves, is the run's noise floor and should come out 1.0x.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import BlobFile
from bench.interleave import interleaved
from bench.measure import Step, alternate
from bench.plan import format_size
from bench.results import Metric, Target
from bench.rgw import RadosGateway, rgw_missing
from bench.servers import PORTSIDE, REFERENCE, Server, registry_server

REPO = "bench/s3blob"
GROUP = "11. blobs on S3 (Ceph RGW)"
TARGET = Target(">= 1.0x the reference", min_speedup=1.0)
log = logging.getLogger("bench")
READ_TIMEOUT = 600.0
PULLS = 8  # recorded pulls of each registry per round: A B B A, four times


def blob_prefix(digest: str) -> str:
    """Where both registries keep a blob in their bucket: Distribution's layout."""
    algorithm, hex_digest = digest.split(":", 1)
    return f"docker/registry/v2/blobs/{algorithm}/{hex_digest[:2]}/{hex_digest}/"


async def run_s3(ctx: Context) -> list[Metric]:
    missing = rgw_missing()
    if missing:
        raise RuntimeError("Ceph is missing: " + ", ".join(missing))
    blob = ctx.blobs[min(ctx.blobs)]  # memstore holds it in memory, several times over
    rgw = RadosGateway(ctx.new_dir("rgw"))
    await rgw.start()
    try:
        metrics = await _phase(ctx, rgw, blob, redirect=False)
        return metrics + await _phase(ctx, rgw, blob, redirect=True)
    finally:
        await rgw.stop()


async def _phase(
    ctx: Context, rgw: RadosGateway, blob: BlobFile, *, redirect: bool
) -> list[Metric]:
    label = format_size(blob.size)
    mode = "redirect" if redirect else "streamed"
    push = Metric(
        f"s3_push_{mode}_{label.replace(' ', '')}",
        f"S3 (RGW) blob push, monolithic, {label}" + (", redirects on" if redirect else ""),
        "MB/s",
        GROUP,
        target=TARGET,
        note="POST, then one PUT with the whole blob; both registries on one RGW",
    )
    pull = Metric(
        f"s3_pull_{mode}_{label.replace(' ', '')}",
        f"S3 (RGW) blob pull, verified, {label}" + (", redirected" if redirect else ""),
        "MB/s",
        GROUP,
        target=TARGET,
        note="307 to a presigned RGW URL, followed" if redirect else "the registry streams",
    )
    # One bucket for both: a push replaces the blob object, and both registries then pull
    # that very object. Two objects, each freshly written, read up to 18% apart in a
    # round straight from RGW (whichever registry wrote them): more than the figure's
    # margin.
    bucket = await rgw.create_bucket()
    servers: list[Server] = []
    workdir = ctx.new_dir(f"s3-{mode}")
    try:
        for name in (PORTSIDE, REFERENCE):
            server = registry_server(
                name,
                workdir,
                workdir / "unused",
                None,
                ctx.plan.portside_env,
                ctx.plan.portside_tree,
                access_log=ctx.plan.access_log,
                storage=rgw.storage_yaml(bucket, redirect=redirect),
            )
            # Distribution 2.8's S3 driver panics at start-up when AWS_CA_BUNDLE is set
            # ("HTTPClient's transport unsupported type"); RGW is plain HTTP here anyway.
            server.env.pop("AWS_CA_BUNDLE", None)
            servers.append(await ctx.lab.start(server))
        await _measure(ctx, rgw, servers, bucket, blob, push, pull)
    finally:
        for server in servers:
            await ctx.lab.stop(server)
    return [push, pull]


async def _measure(
    ctx: Context,
    rgw: RadosGateway,
    servers: Sequence[Server],
    bucket: str,
    blob: BlobFile,
    push: Metric,
    pull: Metric,
) -> None:
    # A push's last request waits for the server-side copy of the whole blob inside RGW:
    # on a loaded machine, well over the other scenarios' 30 s without a byte.
    async with new_session(read_timeout=READ_TIMEOUT) as session:
        clients = {server.name: RegistryClient(session, server.url) for server in servers}

        async def remove(server: Server) -> None:
            await rgw.delete_prefix(bucket, blob_prefix(blob.digest))

        async def pushed(server: Server) -> float:
            started = time.perf_counter()
            await clients[server.name].push_file(REPO, blob.path, blob.size, blob.digest)
            return blob.size / (time.perf_counter() - started) / 1e6

        # The registry's own CPU per MB pulled, by round: on a shared machine it moves far
        # less with other people's load than MB/s does.
        cpu: dict[str, list[float]] = {server.name: [] for server in servers}

        async def pulled(server: Server) -> float:
            before = server.cpu_seconds()
            started = time.perf_counter()
            await clients[server.name].pull_verify(REPO, blob.digest, blob.size)
            elapsed = time.perf_counter() - started
            cpu[server.name].append((server.cpu_seconds() - before) * 1e3 / (blob.size / 1e6))
            return blob.size / elapsed / 1e6

        async def remove_and_collect(server: Server) -> None:
            await remove(server)
            await rgw.collect_garbage()

        async def warm_up(server: Server) -> None:
            await clients[server.name].pull_verify(REPO, blob.digest, blob.size)

        # Each round: both pushes (the servers' order reversing each round, A B, B A),
        # each on an RGW rid of the garbage before it, and the last push's garbage
        # collected too; one pull of each not recorded (connections, RGW's caches); then
        # PULLS of each, A B B A. Before, one pull of each followed the pushes at once:
        # RGW's deletion of the pushes' leftovers (76-141 RADOS objects per push, up to
        # 10 s later) fell into whichever pull was running, and one server was always
        # the first after a push.
        for round_number in range(ctx.plan.rounds):
            order = servers if round_number % 2 == 0 else list(reversed(servers))
            await alternate(ctx.lab, order, 1, [Step(push, pushed, remove_and_collect)])
            await rgw.collect_garbage()
            await interleaved(ctx.lab, order, pull, pulled, PULLS, round_number, warm_up)
        figures = ", ".join(
            f"{name} {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
            for name, values in cpu.items()
            if values
        )
        pull.note += f"; server CPU ms per MB pulled, median (min-max): {figures}"
        log.info("%s: %s", pull.title, pull.note)
