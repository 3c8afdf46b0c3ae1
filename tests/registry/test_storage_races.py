"""Requests racing on the same names: each answers as if it ran alone, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.registry.helpers import Blob, RegistryClient, put_manifest, send
from tests.registry.test_api_errors import GOOD, NAME, manifest, seed

ROUNDS = 480  # of each method: 960 requests, the count the 500 was reported at
WORKERS = 8


@pytest.fixture
async def seeded(registry: RegistryClient) -> RegistryClient:
    return await seed(registry)


async def test_concurrent_delete_and_put_of_a_tag_never_fail(seeded: RegistryClient) -> None:
    body = manifest(Blob(b"{}"), GOOD)
    statuses: list[tuple[str, int, bytes]] = []

    async def put() -> None:
        reply = await put_manifest(seeded, NAME, "raced", body)
        statuses.append(("PUT", reply.status, reply.body))

    async def delete() -> None:
        reply = await send(seeded, "DELETE", f"/v2/{NAME}/manifests/raced")
        statuses.append(("DELETE", reply.status, reply.body))

    async def repeat(job: Callable[[], Awaitable[None]]) -> None:
        for _ in range(ROUNDS // WORKERS):
            await job()

    # Each worker sends its next request as soon as the last one is answered, so PUTs and
    # DELETEs overlap at every step of each other instead of arriving in batches.
    racing = asyncio.gather(*(repeat(job) for _ in range(WORKERS) for job in (put, delete)))
    await asyncio.wait_for(racing, timeout=120)  # about 3 s here; a hang fails, not stalls
    failed = [s for s in statuses if s[1] >= 500]
    assert failed == [], failed[:3]
    assert {status for _, status, _ in statuses} <= {201, 202, 404}
    # Whatever order they ran in, the tag ends whole or absent, never listed yet unknown.
    listed = (await send(seeded, "GET", f"/v2/{NAME}/tags/list")).json()["tags"] or []
    fetched = await send(seeded, "GET", f"/v2/{NAME}/manifests/raced")
    assert ("raced" in listed) == (fetched.status == 200), (listed, fetched)
