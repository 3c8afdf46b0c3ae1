"""Online garbage collection on the filesystem driver: a registry process collecting
every 0.2 s with a one-second grace period while clients push, delete and re-push images
that share layers (tests/registry/gc_stress.py), and the `registry garbage-collect`
command run against the store it serves. The same storm runs on S3 with three instances
in tests/registry/scaleout/test_online_gc_cluster.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.registry import gc_stress
from tests.support.portside_servers import REPOSITORY_ROOT, filesystem_registry, server_env

GRACE = 1.0


async def test_no_acknowledged_manifest_loses_a_blob_while_collection_runs(
    tmp_path: Path,
) -> None:
    server = filesystem_registry(
        tmp_path,
        REGISTRY_STORAGE_DELETE_ENABLED="true",
        REGISTRY_STORAGE_GC_INTERVAL="200ms",
        REGISTRY_STORAGE_GC_GRACEPERIOD=f"{GRACE}s",
        # Nice 19, not the default idle priority: the storm keeps this machine's CPUs
        # busy, and at idle priority the collector would wait for it to end instead of
        # racing its pushes, which is what this test is for (idle priority's own tests
        # are in test_online_gc_child.py).
        REGISTRY_STORAGE_GC_PRIORITY="low",
        REGISTRY_LOG_LEVEL="info",
    )
    environ = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data")}
    server.start()
    try:
        counts = await gc_stress.storm(server.url, clients=12, seconds=12, pause=3 * GRACE)
        assert not counts.errors, counts.errors[:5]
        referenced = await gc_stress.assert_everything_pulls(server.url, environ)
        # Blobs unreferenced for longer than the grace period (plus the storage clock's
        # margin and a few collections) are gone; the referenced ones all pulled above.
        left = await gc_stress.wait_until_collected(environ, referenced, within=30)
        assert not left, f"{len(left)} unreferenced blobs survived: {sorted(map(str, left))[:5]}"
    finally:
        server.stop()
    collections = server.log().count("garbage collection deleted")
    assert counts.pushed > 20 and counts.deleted > 10, counts
    # Collection really ran under the storm and deleted what the deletes freed.
    assert collections >= 5, (collections, server.log()[-2000:])


async def test_garbage_collect_command_is_safe_against_a_serving_store(tmp_path: Path) -> None:
    """The CLI, run again and again against the store a registry serves (which does not
    collect by itself), with the same grace period: the same guarantees."""
    with gc_stress.served_store(tmp_path, GRACE) as store:

        async def collect() -> int:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "registry", "garbage-collect", "-q", str(store.config)),
                cwd=REPOSITORY_ROOT,
                env=server_env(store.environ),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=60)
            assert process.returncode == 0, err.decode()
            return int(out.decode().split("deleted ", 1)[1].split()[0])

        async with gc_stress.collecting(collect) as collected:
            counts = await gc_stress.storm(store.server.url, clients=8, seconds=10, pause=3 * GRACE)
        assert not counts.errors, counts.errors[:5]
        await gc_stress.assert_everything_pulls(store.server.url, store.environ)
    assert counts.pushed > 15 and collected.deleted > 0, (counts, collected.deleted)
