"""The soak's end check, once every fault is recovered: each acknowledged push (its
manifest PUT got 201) is pullable byte for byte, and each push that was not acknowledged
is either absent or complete — never a manifest referencing a missing blob."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from bench.client import MANIFEST_ACCEPT
from bench.soak.client import HardError, Image, OutOfRetries, SoakClient

CONCURRENCY = 8


async def _acknowledged(client: SoakClient, image: Image) -> str | None:
    try:
        await client.pull_image(image)
    except (HardError, OutOfRetries) as error:
        return f"acknowledged {image.repo}:{image.tag} ({image.digest}): {error}"
    return None


async def _unacknowledged(client: SoakClient, image: Image) -> str | None:
    """None if the push is absent or whole; else what is half-visible."""
    where = f"unacknowledged {image.repo}:{image.tag}"
    try:
        by_digest = await client.send(
            "verify_manifest",
            "GET",
            f"/v2/{image.repo}/manifests/{image.digest}",
            frozenset({200, 404}),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        tagged = await client.send(
            "verify_manifest",
            "GET",
            f"/v2/{image.repo}/manifests/{image.tag}",
            frozenset({200, 404}),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if by_digest.status == 404 and tagged.status == 404:
            return None
        if tagged.status == 200 and tagged.body != image.manifest:
            return f"{where}: the tag names another manifest"
        await client.pull_image(image)
    except (HardError, OutOfRetries) as error:
        return f"{where} is half-visible: {error}"
    return None


async def verify(
    client: SoakClient, acknowledged: Sequence[Image], unacknowledged: Sequence[Image]
) -> list[str]:
    """Every problem found (empty: the store is consistent)."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(check: Coroutine[Any, Any, str | None]) -> str | None:
        async with limit:
            return await check

    checks = [_acknowledged(client, image) for image in acknowledged]
    checks += [_unacknowledged(client, image) for image in unacknowledged]
    results = await asyncio.gather(*(bounded(check) for check in checks))
    return [problem for problem in results if problem is not None]
