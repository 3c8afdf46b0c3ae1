"""Scenario 3: many clients at once, each pushing a small image — images/s.

Each client has its own connection pool, as separate ``docker push`` processes would, and
pushes 3 x 1 MiB layers and a config (HEAD, POST, PATCH, PUT each, all at once), then the
manifest. Images are new every round (a unique head in each layer) and built untimed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

from bench.client import RegistryClient, new_session
from bench.context import Context
from bench.data import SmallImage, small_image
from bench.measure import Step, alternate
from bench.results import Metric, Target
from bench.scenarios.requests import push_image
from bench.servers import Server

GROUP = "3. concurrent small-image pushes"
TARGET = Target(">= 1.5x the reference", min_speedup=1.5)


async def run_images(ctx: Context, servers: Sequence[Server]) -> list[Metric]:
    plan = ctx.plan
    metric = Metric(
        "concurrent_image_pushes",
        f"{plan.clients} clients each push an image",
        "images/s",
        GROUP,
        target=TARGET,
        note=f"{plan.layers} x {plan.layer_size // 1024} KiB layers + config + manifest per image",
    )
    base = os.urandom(plan.layer_size)
    images: dict[str, list[SmallImage]] = {}
    rounds_done: dict[str, int] = {}

    async def build(server: Server) -> None:
        # The same images for both servers in a round (their stores are apart), new ones
        # each round, so that no push finds its blobs already there.
        number = rounds_done.get(server.name, 0)
        rounds_done[server.name] = number + 1
        images[server.name] = [
            small_image(f"round{number}-client{index}", base, plan.layers)
            for index in range(plan.clients)
        ]

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

    await alternate(ctx.lab, servers, plan.rounds, [Step(metric, push_all, build)])
    return [metric]
