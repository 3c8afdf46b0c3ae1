"""The chaos soak, short: three registries and two tokenauth replicas behind nginx, on S3
(moto) and a Redis the soak restarts, a few clients pushing and pulling images with shared
layers while a registry, a tokenauth or Redis is killed every few seconds. Every
acknowledged push must then pull back byte for byte, nothing unacknowledged may be
half-visible, and the clients may have seen only retryable errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.soak.run import SoakSettings, run_soak
from tests.support.backing_services import RedisServer, shared_services
from tests.support.chaos_deployment import PlainRedis, SoakDeployment, start_soak_deployment

CLIENTS = 6
SECONDS = 40
FAULT_INTERVAL = 3.0


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SoakDeployment]:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        deployment = start_soak_deployment(
            tmp_path / "deployment", shared_services().s3(), PlainRedis(redis)
        )
        try:
            yield deployment
        finally:
            deployment.stop()
    finally:
        redis.stop()


async def test_soak_under_chaos(deployment: SoakDeployment) -> None:
    settings = SoakSettings(clients=CLIENTS, seconds=SECONDS, interval=FAULT_INTERVAL)
    result = await run_soak(deployment, settings)
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    assert result.failures == [], json.dumps(summary, indent=2)
    # The soak really did something: pushes and pulls, and faults of every kind.
    assert result.recorder.pushes >= CLIENTS and result.recorder.pulls > 0, summary
    assert set(result.chaos.faults) >= {"registry", "tokenauth", "redis-restart"}, summary
