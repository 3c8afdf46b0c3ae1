"""Online garbage collection on S3 (moto or RGW) with the Redis blob-descriptor cache: one
instance, and three instances behind nginx sharing the bucket and Redis, every one of
them collecting every 0.2 s with a ten-second grace period while the clients of
tests/registry/gc_stress.py push, delete and re-push through the balancer. Concurrent
collectors are not elected: the protocol makes them safe (docs/online-gc.md).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.registry import gc_stress
from tests.registry.scaleout.cluster import Cluster, instance_settings
from tests.support.backing_services import s3_kinds, shared_services

# Long enough for a manifest PUT (half of it) on moto or RGW, on a machine under load.
GRACE = 10.0


# One instance and three on moto; on RGW, whose run costs as much, three only (one
# instance adds nothing that S3 itself decides).
CASES = [(n, kind) for kind in s3_kinds() for n in ((1, 3) if kind == "moto" else (3,))]


@pytest.mark.parametrize(("instances", "s3_kind"), CASES)
async def test_no_acknowledged_manifest_loses_a_blob_on_s3(
    instances: int, s3_kind: str, tmp_path: Path
) -> None:
    services = shared_services()
    s3_server, redis_server = services.s3_server(s3_kind), services.redis_server()
    bucket = s3_server.create_bucket()
    settings = instance_settings(s3_server, bucket, redis_server.addr, f"secret-{uuid.uuid4()}")
    # Info, not debug: botocore logs the tracebacks of moto's own retried 500s at debug,
    # and the check below is for tracebacks of portside's.
    settings["log"]["level"] = "info"
    # Low, not idle, priority: at idle a collection on a loaded machine (these tests run
    # beside others) gets almost no CPU and may not finish in the time waited below;
    # what is checked is safety, which the priority does not change.
    settings["storage"]["gc"] = {
        "interval": "200ms",
        "graceperiod": f"{GRACE}s",
        "priority": "low",
    }
    cluster = Cluster(tmp_path, settings, size=instances)
    cluster.start()
    environ = s3_server.s3_environ(bucket)
    try:
        counts = await gc_stress.storm(
            cluster.balancer.url, clients=12, seconds=20, pause=0.3 * GRACE
        )
        assert not counts.errors, counts.errors[:5]
        referenced = await gc_stress.assert_everything_pulls(cluster.balancer.url, environ)
        left = await gc_stress.wait_until_collected(environ, referenced, within=120)
        assert not left, f"{len(left)} unreferenced blobs survived: {sorted(map(str, left))[:5]}"
        log_paths = [instance.log_path for instance in cluster.instances]
        collecting = await gc_stress.collections_logged(log_paths, within=30)
    finally:
        cluster.stop()
    logs = [instance.log_path.read_text(errors="replace") for instance in cluster.instances]
    assert counts.pushed > 10 and counts.deleted > 3, counts
    # Collection really deleted (which instance did is a race between them).
    assert sum(collecting) >= 1, collecting
    assert not any("Traceback" in log for log in logs), [log[-3000:] for log in logs]
