"""Scenario 12: the chaos soak (opt-in: ``--scenarios soak``; minutes, not seconds).

Three portside registries and two tokenauth replicas, each group behind its own nginx,
on one S3 bucket (Ceph's RADOS Gateway, single node; moto where Ceph is not installed)
and Redis behind Sentinel (a master, a replica, three sentinels). ``plan.soak_clients``
clients log in and push and pull images with shared layers for ``plan.soak_seconds``
while a driver SIGKILLs and restarts a registry or a tokenauth, restarts the Redis master
or fails it over, every ``plan.soak_interval`` seconds or so (bench/soak). Then every
acknowledged push is pulled back byte for byte and every unacknowledged one checked for
half-visibility. Reported: the retryable error rate the clients saw, hard errors and
end-check problems (both must be 0), p50/p99 latency per operation, and throughput.
portside only: the reference has no token server to kill.
"""

from __future__ import annotations

import asyncio
import json
import logging

from bench.context import Context
from bench.results import Metric, Target
from bench.rgw import rgw_missing
from bench.servers import PORTSIDE, REFERENCE
from bench.soak.run import SoakResult, SoakSettings, run_soak
from tests.support.backing_services import MotoServer, S3Server
from tests.support.chaos_deployment import SentinelRedis, start_soak_deployment
from tests.support.redis_sentinel import RedisSentinelGroup
from tests.support.rgw import RadosGateway

GROUP = "12. chaos soak"
ZERO = Target("0", max_value=0)
LATENCIES = ("login", "image_push", "image_pull", "blob_upload", "manifest_put", "blob_get")
log = logging.getLogger("bench")


def _metric(key: str, title: str, unit: str, value: float, **options: object) -> Metric:
    metric = Metric(key, title, unit, GROUP, plotted=False, **options)  # type: ignore[arg-type]
    metric.add_value(PORTSIDE, value)
    metric.unavailable[REFERENCE] = "portside only (the reference has no token server)"
    return metric


def soak_metrics(result: SoakResult) -> list[Metric]:
    summary = result.recorder.summary()
    problems = len(result.problems)
    metrics = [
        _metric(
            "soak_error_rate",
            "client-visible retryable errors per request",
            "%",
            100 * result.recorder.error_rate,
            higher_is_better=False,
            note=", ".join(f"{k}: {v}" for k, v in sorted(result.recorder.retryable.items())),
        ),
        _metric(
            "soak_hard_errors",
            "hard errors (non-retryable, or out of retries)",
            "errors",
            len(result.recorder.hard_errors) + len(result.recorder.gave_up),
            higher_is_better=False,
            target=ZERO,
        ),
        _metric(
            "soak_end_check_problems",
            "acknowledged pushes not pullable, or unacknowledged ones half-visible",
            "images",
            problems,
            higher_is_better=False,
            target=ZERO,
            note=f"{len(result.acknowledged)} acknowledged pushes checked, "
            f"{len(result.unacknowledged)} unacknowledged",
        ),
        _metric(
            "soak_pushes", "image pushes acknowledged", "pushes/s", summary["pushes_per_second"]
        ),
        _metric("soak_pulls", "image pulls verified", "pulls/s", summary["pulls_per_second"]),
        _metric("soak_bytes", "pushed and pulled", "MB/s", summary["mb_per_second"]),
    ]
    for operation in LATENCIES:
        figures = summary["latency_ms"].get(operation)
        if figures is None:
            continue
        for rank in ("p50", "p99"):
            metrics.append(
                _metric(
                    f"soak_{operation}_{rank}",
                    f"{operation} latency, {rank}, retries included",
                    "ms",
                    figures[rank],
                    higher_is_better=False,
                )
            )
    failures = result.failures
    if failures:
        metrics[1].unavailable[PORTSIDE] = f"failed: {failures[0]}"
    return metrics


async def run_chaos_soak(ctx: Context) -> list[Metric]:
    plan = ctx.plan
    workdir = ctx.new_dir("soak")
    s3: S3Server
    if rgw_missing():
        log.warning("chaos soak on moto: no Ceph here (%s)", ", ".join(rgw_missing()))
        s3 = MotoServer(workdir / "moto")
    else:
        s3 = RadosGateway(workdir / "rgw")
    redis = RedisSentinelGroup(workdir / "redis")
    await asyncio.to_thread(s3.start)
    try:
        await asyncio.to_thread(redis.start)
        deployment = await asyncio.to_thread(
            start_soak_deployment, workdir / "deployment", s3, SentinelRedis(redis)
        )
        try:
            settings = SoakSettings(plan.soak_clients, plan.soak_seconds, plan.soak_interval)
            log.info(
                "chaos soak: %d clients for %ds, a fault every ~%.0fs",
                settings.clients,
                settings.seconds,
                settings.interval,
            )
            result = await run_soak(deployment, settings)
        finally:
            await asyncio.to_thread(deployment.stop)
    finally:
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(s3.stop)
    summary = json.dumps(result.summary(), indent=2)
    log.info("chaos soak summary:\n%s", summary)
    (workdir / "soak-summary.log").write_text(summary)  # kept with the servers' logs
    return soak_metrics(result)
