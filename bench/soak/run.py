"""One soak: N clients pushing and pulling images with shared layers through the
deployment's balancer for a while, the chaos driver causing faults meanwhile, then the
end check. ``bench/scenarios/soak.py`` (minutes, 100 clients) and ``tests/e2e/test_soak.py``
(about a minute, a few clients) both run it.

Each client is one user with its own connections, as separate ``docker`` processes are:
it logs in, then pushes a new image (two of a few layers every image shares, one layer
and a config of its own) or pulls a random image some client pushed, half and half.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.client import image_manifest
from bench.soak.chaos import ChaosDriver, ChaosLog
from bench.soak.client import HardError, Image, OutOfRetries, SoakClient, sha256
from bench.soak.stats import Recorder
from bench.soak.verify import verify
from tests.support.chaos_deployment import SoakDeployment
from tests.support.deployments import PASSWORDS

log = logging.getLogger("bench.soak")
USER = "alice"  # the deployments' ACL lets alice push and pull alice/*
SHARED_LAYERS = 4
LAYERS_PER_IMAGE = 3  # two shared, one the image's own
# The longest a refused Redis failover may wait for the sentinels to settle (the topology's
# bound) and be caused after all.
EXTRA_SECONDS_FOR_EVERY_FAULT = 120.0


@dataclass(frozen=True)
class SoakSettings:
    clients: int
    seconds: float
    interval: float  # seconds between faults, on average
    layer_size: int = 256 * 1024
    seed: int | None = None


@dataclass
class SoakResult:
    settings: SoakSettings
    recorder: Recorder
    chaos: ChaosLog
    acknowledged: list[Image] = field(default_factory=list)
    unacknowledged: list[Image] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # from the end check

    @property
    def failures(self) -> list[str]:
        """Why the soak failed (empty: it passed)."""
        failures = [f"hard error: {e}" for e in self.recorder.hard_errors]
        failures += [f"gave up: {e}" for e in self.recorder.gave_up]
        return failures + self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.settings.clients,
            "fault_interval_seconds": self.settings.interval,
            "layer_size": self.settings.layer_size,
            **self.recorder.summary(),
            "faults": dict(self.chaos.faults),
            "recovery_seconds_max": {
                fault: round(max(values), 1)
                for fault, values in self.chaos.recovery_seconds.items()
            },
            "acknowledged_verified": len(self.acknowledged)
            - sum(p.startswith("acknowledged") for p in self.problems),
            "unacknowledged_checked": len(self.unacknowledged),
            "problems": self.problems[:50],
        }


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=4),
        # As docker: no limit on a whole request, only on silence (nginx times out first).
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
    )


def build_image(repo: str, tag: str, shared: list[bytes], rng: random.Random, size: int) -> Image:
    layers = [*rng.sample(shared, LAYERS_PER_IMAGE - 1), os.urandom(size)]
    digests = [sha256(layer) for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": digests},
            "config": {"Labels": {"soak": f"{repo}:{tag}"}},
        }
    ).encode()
    manifest = image_manifest((config, sha256(config)), list(zip(layers, digests, strict=True)))
    blobs = {sha256(config): config, **dict(zip(digests, layers, strict=True))}
    return Image(repo, tag, manifest, sha256(manifest), blobs)


async def _client(
    index: int,
    deployment: SoakDeployment,
    settings: SoakSettings,
    shared: list[bytes],
    result: SoakResult,
    stop: asyncio.Event,
) -> None:
    rng = random.Random(None if settings.seed is None else settings.seed + index)
    repo = f"{USER}/soak-{index:03d}"
    async with new_session() as session:
        client = SoakClient(session, deployment.url, USER, PASSWORDS[USER], result.recorder)
        number = 0
        while not stop.is_set():
            image = None
            try:
                if number == 0:
                    await client.ping()
                if result.acknowledged and rng.random() < 0.5:
                    await client.pull_image(rng.choice(result.acknowledged))
                    result.recorder.pulls += 1
                else:
                    number += 1
                    image = build_image(repo, f"v{number}", shared, rng, settings.layer_size)
                    await client.push_image(image)
                    result.acknowledged.append(image)
                    result.recorder.pushes += 1
            except (HardError, OutOfRetries):
                # Recorded already; a user would try again.
                if image is not None:
                    result.unacknowledged.append(image)
                await asyncio.sleep(0.5)


async def run_soak(deployment: SoakDeployment, settings: SoakSettings) -> SoakResult:
    """Run the load and the faults for ``settings.seconds`` (longer until every kind of fault
    was caused once), then the end check."""
    shared = [os.urandom(settings.layer_size) for _ in range(SHARED_LAYERS)]
    chaos = ChaosDriver(deployment, settings.interval, rng=random.Random(settings.seed))
    result = SoakResult(settings, Recorder(), chaos.log)
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_client(i, deployment, settings, shared, result, stop))
        for i in range(settings.clients)
    ]
    driver = asyncio.create_task(chaos.run(stop))
    try:
        done, _ = await asyncio.wait([driver, *clients], timeout=settings.seconds)
        if not done:
            # A run that has not seen every kind of fault yet goes on until it has, for at
            # most as long again plus the slowest recovery's bound.
            caused: asyncio.Task[Any] = asyncio.create_task(chaos.every_kind_caused.wait())
            done, _ = await asyncio.wait(
                [caused, driver, *clients],
                timeout=settings.seconds + EXTRA_SECONDS_FOR_EVERY_FAULT,
                return_when=asyncio.FIRST_COMPLETED,
            )
            caused.cancel()
            done.discard(caused)
        for task in done:  # a crash of the harness itself, not a registry's failure
            task.result()
    finally:
        stop.set()
        await asyncio.gather(driver, *clients, return_exceptions=True)
        result.recorder.stop()
    log.info("soak: load over, checking %d pushes", len(result.acknowledged))
    async with new_session() as session:
        checker = SoakClient(session, deployment.url, USER, PASSWORDS[USER], Recorder())
        result.problems = await verify(checker, result.acknowledged, result.unacknowledged)
    return result
