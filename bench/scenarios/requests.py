"""Scenario 2: ``GET`` a manifest by tag, ``HEAD`` a blob and ``GET`` a tag-list page —
requests/s at 32 keep-alive connections (wrk for GET, ab for HEAD: see bench.loadgen).

Issue 17's variants (bench/README.md has the commands):

- no token: ``--scenarios requests`` (keys ``manifest_get``, ``blob_head``, ``tags_list``);
- with a bearer token: ``--scenarios tokens`` runs the same three through
  :func:`run_requests` with ``auth`` fetching a token from tokenauth before each run (one
  token per run, sent on every request, as a client does): keys ``..._with_token``;
- two portside workers: either, with ``--portside-env PORTSIDE_WORKERS=2``: keys
  ``..._2_workers``, held to the two-worker target (10x).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aiohttp

from bench.client import MANIFEST_ACCEPT, OCI_MANIFEST, RegistryClient, new_session
from bench.context import Context
from bench.data import SmallImage, small_image
from bench.loadgen import run_ab_head, run_wrk
from bench.measure import Step, alternate
from bench.plan import MIB
from bench.results import Metric, Target
from bench.servers import Server

REPO = "bench/small"
TAG = "latest"
TAGS_PAGE = 50  # n= of the tag-list page (the reference registry 2.8.2 ignores it)
GROUP = "2. manifest GET and blob HEAD"
TARGET = Target(">= 5x the reference (issue 17)", min_speedup=5.0)
WORKERS_TARGET = Target(">= 10x the reference with --workers 2 (issue 17)", min_speedup=10.0)
WARM_UP_REQUESTS = 20
# Returns the headers a request to that server needs (a fresh bearer token, or nothing).
AuthHeaders = Callable[[Server], Awaitable[Mapping[str, str]]]


def the_image() -> SmallImage:
    return small_image("bench-small", os.urandom(MIB))


async def push_image(client: RegistryClient, repo: str, tag: str, image: SmallImage) -> None:
    """Push as docker does: every blob (HEAD, POST, PATCH, PUT) at once, then the manifest."""
    await asyncio.gather(
        *(client.push_bytes(repo, data, digest) for data, digest in [*image.layers, image.config])
    )
    await client.put_manifest(repo, tag, image.manifest, OCI_MANIFEST)


async def warm_up(
    session: aiohttp.ClientSession, server: Server, image: SmallImage, headers: Mapping[str, str]
) -> None:
    """A few requests first, so no server pays its first-request costs inside a run."""
    for _ in range(WARM_UP_REQUESTS):
        async with session.get(
            f"{server.url}/v2/{REPO}/manifests/{TAG}",
            headers={**headers, "Accept": MANIFEST_ACCEPT},
        ) as response:
            await response.read()
        async with session.head(
            f"{server.url}/v2/{REPO}/blobs/{image.layers[0][1]}", headers=headers
        ) as response:
            await response.read()


async def no_auth(server: Server) -> Mapping[str, str]:
    return {}


def portside_workers(ctx: Context) -> int:
    """How many worker processes portside runs with (``PORTSIDE_WORKERS``, default 1)."""
    try:
        return max(1, int(ctx.plan.portside_env.get("PORTSIDE_WORKERS", "1")))
    except ValueError:
        return 1


async def run_requests(
    ctx: Context,
    servers: Sequence[Server],
    image: SmallImage,
    auth: AuthHeaders = no_auth,
    suffix: str = "",
    group: str = GROUP,
) -> list[Metric]:
    """The image must already be in ``REPO:TAG`` on every server."""
    plan = ctx.plan
    workers = portside_workers(ctx)
    target = TARGET if workers == 1 else WORKERS_TARGET
    if workers > 1:
        suffix += f", {workers} workers"
    key_suffix = suffix.replace(" ", "_").replace(",", "")
    manifest = Metric(
        f"manifest_get{key_suffix}",
        f"manifest GET by tag{suffix}",
        "requests/s",
        group,
        target=target,
        note=f"wrk, {plan.connections} keep-alive connections, {plan.rate_seconds}s",
    )
    head = Metric(
        f"blob_head{key_suffix}",
        f"blob HEAD{suffix}",
        "requests/s",
        group,
        target=target,
        note=f"ab -k -i, {plan.connections} keep-alive connections, {plan.rate_seconds}s",
    )
    tags = Metric(
        f"tags_list{key_suffix}",
        f"tag list page (n={TAGS_PAGE}){suffix}",
        "requests/s",
        group,
        target=target,
        note=f"wrk, {plan.connections} keep-alive connections, {plan.rate_seconds}s",
    )
    async with new_session() as session:
        for server in servers:
            await warm_up(session, server, image, await auth(server))

    headers: dict[str, Mapping[str, str]] = {}

    async def authenticate(server: Server) -> None:
        # Untimed: a client keeps its token for its lifetime; a fresh one per run never expires.
        headers[server.name] = await auth(server)

    async def get_manifest(server: Server) -> float:
        result = await run_wrk(
            f"{server.url}/v2/{REPO}/manifests/{TAG}",
            duration=plan.rate_seconds,
            connections=plan.connections,
            headers={**headers[server.name], "Accept": MANIFEST_ACCEPT},
        )
        return result.requests_per_second

    async def head_blob(server: Server) -> float:
        result = await run_ab_head(
            f"{server.url}/v2/{REPO}/blobs/{image.layers[0][1]}",
            duration=plan.rate_seconds,
            connections=plan.connections,
            headers=headers[server.name],
        )
        return result.requests_per_second

    async def list_tags(server: Server) -> float:
        result = await run_wrk(
            f"{server.url}/v2/{REPO}/tags/list?n={TAGS_PAGE}",
            duration=plan.rate_seconds,
            connections=plan.connections,
            headers=headers[server.name],
        )
        return result.requests_per_second

    steps = [
        Step(manifest, get_manifest, authenticate),
        Step(head, head_blob, authenticate),
        Step(tags, list_tags, authenticate),
    ]
    await alternate(ctx.lab, servers, plan.rounds, steps, retries=plan.retries)
    return [manifest, head, tags]
