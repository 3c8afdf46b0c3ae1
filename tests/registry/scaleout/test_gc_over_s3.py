"""``registry garbage-collect`` on S3 with the Redis blob-descriptor cache.

The serving registry (S3 + Redis) remembers every blob it served; the collector runs as
its own process on the same bucket and Redis, as an operator runs it. Afterwards the
serving registry must answer 404 for what was collected (the collector dropped it from
the shared cache, not only from the bucket) and still serve every kept image.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.registry.conftest import RegistryClient
from tests.registry.helpers import Blob, assert_2xx, send
from tests.registry.test_garbage_collect import blob, push_image
from tests.support.portside_servers import REPOSITORY_ROOT, server_env


async def test_collection_over_s3_drops_deleted_blobs_from_the_shared_cache(
    registry: RegistryClient, registry_environ: dict[str, str], tmp_path: Path
) -> None:
    kept_layer, gone_layer = blob("s3-kept-layer"), blob("s3-gone-layer")
    kept = await push_image(registry, "s3/app", "v1", blob("s3-kept-config"), [kept_layer])
    gone = await push_image(registry, "s3/app", "v2", blob("s3-gone-config"), [gone_layer])
    # Served once, so the cache (Redis) knows the blob; then its manifest is deleted.
    assert_2xx(await send(registry, "GET", f"/v2/s3/app/blobs/{gone_layer.digest}"))
    assert_2xx(await send(registry, "DELETE", f"/v2/s3/app/manifests/{Blob(gone).digest}"))

    config = tmp_path / "gc.yml"
    config.write_text("version: 0.1\nlog:\n  level: error\n")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "registry", "garbage-collect", str(config)),
        cwd=REPOSITORY_ROOT,
        # A fresh store: collected without a grace period (Distribution's way).
        env=server_env({**registry_environ, "REGISTRY_STORAGE_GC_GRACEPERIOD": "0s"}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    assert f"blob eligible for deletion: {gone_layer.digest}" in out.decode()
    assert "deleted 3 blobs, 0 manifests" in out.decode()  # layer, config and manifest

    for digest in (gone_layer.digest, Blob(gone).digest):
        reply = await send(registry, "GET", f"/v2/s3/app/blobs/{digest}")
        assert reply.status == 404, (digest, reply)
    pulled = await send(registry, "GET", "/v2/s3/app/manifests/v1")
    assert pulled.status == 200 and pulled.body == kept
    layer = await send(registry, "GET", f"/v2/s3/app/blobs/{kept_layer.digest}")
    assert layer.status == 200 and layer.body == kept_layer.data
