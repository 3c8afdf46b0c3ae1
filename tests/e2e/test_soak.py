"""The chaos soak, short: three registries and two tokenauth replicas behind nginx, on S3
(Ceph's RADOS Gateway when the run tests against it, as CI does; else moto) and Redis
behind Sentinel, which the soak restarts and fails over. A few clients push and pull
images with shared layers while a registry, a tokenauth or the Redis master is killed
every few seconds. Every acknowledged push must then pull back byte for byte, nothing
unacknowledged may be half-visible, and the clients may have seen only retryable
errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.soak.run import SoakSettings, run_soak
from tests.support.backing_services import s3_kinds, shared_services
from tests.support.chaos_deployment import SentinelRedis, SoakDeployment, start_soak_deployment
from tests.support.redis_sentinel import RedisSentinelGroup

CLIENTS = 6
SECONDS = 40
FAULT_INTERVAL = 3.0


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SoakDeployment]:
    s3 = shared_services().s3_server("rgw" if "rgw" in s3_kinds() else "moto")
    redis = RedisSentinelGroup(tmp_path / "redis")
    redis.start()
    try:
        deployment = start_soak_deployment(tmp_path / "deployment", s3, SentinelRedis(redis))
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
    assert set(result.chaos.faults) >= {
        "registry",
        "tokenauth",
        "redis-restart",
        "redis-failover",
    }, summary
