"""Scenario 10: blob pulls against nginx serving the very same files with sendfile.

nginx (one worker, ``sendfile on``) serves portside's storage directory as static files:
what this machine can send from the page cache over loopback. Portside, nginx and the
reference registry (for context) take turns each round; every transfer is made by curl,
which only counts the bytes, so the figure is what the server can send:

- one pull of a large blob;
- ``pull_streams`` concurrent pulls of as many distinct blobs (one curl, ``--parallel``);
- ``pull_streams`` concurrent Range requests at distinct offsets of the large blob.

Ratios are portside/nginx. Every transfer's status and size are checked. A first round is
not recorded (page cache and first requests), and the servers' order reverses each round.
A second, identical nginx (``nginx-again``) takes its turn too: its ratio to the first is
the run's noise floor, what two equal servers differ by in these very rounds, against which
a ratio of portside's has to be read (curl, the receiver, is the busier side on 2 cores).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import BlobFile, write_blob_file
from bench.measure import Step, alternate
from bench.nginx import NGINX, blob_url, nginx_server
from bench.plan import format_size
from bench.results import Metric, Target
from bench.scenarios.blobs import settle
from bench.servers import PORTSIDE, Server

REPO = "bench/pull"
GROUP = "10. pulls against nginx (sendfile)"
CONTROL = "nginx-again"  # the same nginx once more: the noise floor of the rounds
TARGET = Target(">= 0.95x nginx", min_speedup=0.95)
CURL = "curl"


class CurlFailed(RuntimeError):
    """A transfer did not answer as expected (status or size)."""


async def curl(transfers: Sequence[tuple[str, str | None, int, int]]) -> float:
    """Run ``(url, range, status, size)`` transfers in one curl, in parallel; MB/s over
    all of them, from the first request to the last byte. Bodies are discarded."""
    command = [CURL, "--parallel", "--parallel-max", str(len(transfers))]
    for index, (url, byte_range, _, _) in enumerate(transfers):
        if index:
            command.append("--next")
        command += ["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}\\n"]
        if byte_range is not None:
            command += ["-r", byte_range]
        command.append(url)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    output, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    answers = sorted(output.decode().split("\n")[:-1])
    expected = sorted(f"{status} {size}" for _, _, status, size in transfers)
    if process.returncode or answers != expected:
        raise CurlFailed(f"curl exited {process.returncode}: {answers[:3]} not {expected[:3]}")
    return sum(size for *_, size in transfers) / elapsed / 1e6


def ranges(size: int, count: int, length: int) -> list[tuple[int, int]]:
    """``count`` ranges of ``length`` bytes spread evenly over a blob of ``size``."""
    step = (size - length) // max(1, count - 1)
    return [(index * step, length) for index in range(count)]


async def run_pulls(ctx: Context, registries: Sequence[Server]) -> list[Metric]:
    plan = ctx.plan
    portside = next(s for s in registries if s.name == PORTSIDE)
    if portside.root is None:
        raise RuntimeError("portside has no storage root")
    data = ctx.new_dir("pull-data")
    large = await asyncio.to_thread(write_blob_file, data / "large", plan.pull_size, 101)
    streams = [
        await asyncio.to_thread(write_blob_file, data / f"s{i}", plan.pull_stream_size, 200 + i)
        for i in range(plan.pull_streams)
    ]
    async with new_session() as session:
        for registry in registries:
            client = RegistryClient(session, registry.url)
            for blob in (large, *streams):
                await client.push_file(REPO, blob.path, blob.size, blob.digest)
    await asyncio.to_thread(_remove_files, [large, *streams])
    await settle()
    nginx = await ctx.lab.start(nginx_server(ctx.new_dir(NGINX), portside.root))
    try:
        again = nginx_server(ctx.new_dir(CONTROL), portside.root)
        control = await ctx.lab.start(dataclasses.replace(again, name=CONTROL))
        try:
            servers = [portside, nginx, control, *registries[1:]]
            return await _measure(ctx, servers, large, streams)
        finally:
            await ctx.lab.stop(control)
    finally:
        await ctx.lab.stop(nginx)


def _remove_files(blobs: Sequence[BlobFile]) -> None:
    """The client's copies are not needed once pushed: keep the page cache for the stores."""
    for blob in blobs:
        blob.path.unlink()


async def _measure(
    ctx: Context, servers: Sequence[Server], large: BlobFile, streams: Sequence[BlobFile]
) -> list[Metric]:
    plan = ctx.plan

    def url(server: Server, digest: str) -> str:
        if server.name in (NGINX, CONTROL):
            return blob_url(server, digest)
        return f"{server.url}/v2/{REPO}/blobs/{digest}"

    def metric(key: str, title: str, note: str) -> Metric:
        return Metric(key, title, "MB/s", GROUP, target=TARGET, note=note, baseline=NGINX)

    single = metric(
        "pull_vs_nginx",
        f"one pull of {format_size(large.size)}, curl",
        "curl -o /dev/null: one connection, the whole blob",
    )
    parallel = metric(
        "pulls_concurrent_vs_nginx",
        f"{len(streams)} concurrent pulls of {format_size(plan.pull_stream_size)}",
        "one curl --parallel, a distinct blob per connection; MB/s of them all",
    )
    spans = ranges(large.size, plan.pull_streams, plan.range_size)
    ranged = metric(
        "ranges_concurrent_vs_nginx",
        f"{len(spans)} concurrent ranges of {format_size(plan.range_size)}",
        f"one curl --parallel, Range requests spread over the {format_size(large.size)} blob",
    )

    def step(
        target: Metric, transfers: Callable[[Server], list[tuple[str, str | None, int, int]]]
    ) -> Step:
        async def run(server: Server) -> float:
            return await curl(transfers(server))

        return Step(target, run)

    steps = [
        step(single, lambda s: [(url(s, large.digest), None, 200, large.size)]),
        step(parallel, lambda s: [(url(s, b.digest), None, 200, b.size) for b in streams]),
        step(
            ranged,
            lambda s: [
                (url(s, large.digest), f"{start}-{start + length - 1}", 206, length)
                for start, length in spans
            ],
        ),
    ]
    # One unrecorded round first: every file is read into the page cache (nginx serves
    # portside's files, the reference its own) and every server has served each kind of
    # request once. Then the order of the servers reverses each round (A B, B A), so
    # that coming first or last after another server's transfer favours none.
    for server in servers:
        for each in steps:
            await each.run(server)
    for round_number in range(plan.rounds):
        order = servers if round_number % 2 == 0 else list(reversed(servers))
        await alternate(ctx.lab, order, 1, steps, retries=plan.retries)
    return [single, parallel, ranged]


def missing() -> list[str]:
    """The Debian packages this scenario needs and the machine lacks."""
    return [tool for tool in (NGINX, CURL) if shutil.which(tool) is None]
