"""Scenario 3: many small images pushed at once — images/s.

Two loads, each client with its own connection pool, as separate ``docker push``
processes would have, each image 3 x 1 MiB layers and a config (HEAD, POST, PATCH, PUT
each, all at once), then the manifest:

- *50 clients each push an image* (issue 7): all 50 at once;
- *32 images, 8 at a time* (issue 17): 8 pushers, each pushing its share of 32 images one
  after the other, so 8 images are in flight until the last ones.

Images are new every round (a unique head in each layer) and built untimed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import SmallImage, small_image
from bench.measure import Step, alternate
from bench.results import Metric, Target
from bench.scenarios.requests import push_image
from bench.servers import Server

GROUP = "3. concurrent small-image pushes"
TARGET = Target(">= 1.5x the reference", min_speedup=1.5)
BATCH_TARGET = Target(">= 2x the reference", min_speedup=2.0)
BATCH_IMAGES = 32  # issue 17's load: 32 three-layer images pushed 8 at a time
BATCH_PUSHERS = 8


async def run_images(ctx: Context, servers: Sequence[Server]) -> list[Metric]:
    plan = ctx.plan
    layers = f"{plan.layers} x {plan.layer_size // 1024} KiB layers + config + manifest per image"
    metric = Metric(
        "concurrent_image_pushes",
        f"{plan.clients} clients each push an image",
        "images/s",
        GROUP,
        target=TARGET,
        note=layers,
    )
    batch_images = min(BATCH_IMAGES, plan.clients)
    batch_pushers = min(BATCH_PUSHERS, batch_images)
    batch = Metric(
        "image_pushes_32x8",
        f"{batch_images} images pushed {batch_pushers} at a time",
        "images/s",
        GROUP,
        target=BATCH_TARGET,
        note=layers,
    )
    base = os.urandom(plan.layer_size)
    images: dict[str, list[SmallImage]] = {}
    rounds_done: dict[str, int] = {}

    def builder(label: str, count: int) -> Callable[[Server], Awaitable[None]]:
        async def build(server: Server) -> None:
            # The same images for both servers in a round (their stores are apart), new
            # ones each round, so that no push finds its blobs already there.
            number = rounds_done.get(server.name, 0)
            rounds_done[server.name] = number + 1
            images[server.name] = [
                small_image(f"{label}{number}-client{index}", base, plan.layers)
                for index in range(count)
            ]

        return build

    async def push_all(server: Server) -> float:
        sessions = [new_session(connections=8) for _ in range(plan.clients)]
        try:
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    push_image(
                        RegistryClient(session, server.url),
                        f"bench/image{index:02d}",
                        f"v{rounds_done[server.name]}",
                        image,
                    )
                    for index, (session, image) in enumerate(
                        zip(sessions, images[server.name], strict=True)
                    )
                )
            )
            elapsed = time.perf_counter() - started
        finally:
            await asyncio.gather(*(session.close() for session in sessions))
        return plan.clients / elapsed

    async def push_batch(server: Server) -> float:
        todo = list(enumerate(images[server.name]))
        sessions = [new_session(connections=8) for _ in range(batch_pushers)]

        async def pusher(session: aiohttp.ClientSession) -> None:
            client = RegistryClient(session, server.url)
            while todo:
                index, image = todo.pop(0)
                await push_image(
                    client, f"bench/batch{index:02d}", f"v{rounds_done[server.name]}", image
                )

        try:
            started = time.perf_counter()
            await asyncio.gather(*(pusher(session) for session in sessions))
            elapsed = time.perf_counter() - started
        finally:
            await asyncio.gather(*(session.close() for session in sessions))
        return batch_images / elapsed

    await alternate(
        ctx.lab,
        servers,
        plan.rounds,
        [
            Step(metric, push_all, builder("round", plan.clients)),
            Step(batch, push_batch, builder("batch", batch_images)),
        ],
    )
    return [metric, batch]
