"""The ordering argument of docs/online-gc.md, one step at a time: a collector paused
right after it condemned an old, unreferenced blob, or right before it deletes it, while
a client that was told by a HEAD that the blob exists pushes a manifest naming it.

Paused before its re-read, the collector sees the refresh of the HEAD and the PUT and
spares the blob: the PUT (waiting for the record to clear) is acknowledged and pulls.
Paused after its re-read, it deletes the blob: the PUT, which saw the record, waits and
is then refused, so no acknowledged manifest names the deleted blob.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from registry.keys import STORAGE
from registry.storage.gc import GarbageCollector
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob, assert_2xx, assert_error, push_blob, put_manifest, send
from tests.support.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

GRACE = 30.0
NAME = "order/app"


def manifest(config: Blob, layer: Blob) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": 2},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": len(layer.data)}
            ],
        }
    ).encode()


def backdate(root: Path, blob: Blob, seconds: float) -> None:
    """Make the blob look unreferenced for ``seconds`` (its lastref is the data's mtime)."""
    hex_digest = blob.digest.split(":", 1)[1]
    data = root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    then = time.time() - seconds
    os.utime(data, (then, then))


async def old_unreferenced_layer(client: RegistryClient, root: Path, label: str) -> Blob:
    """A layer pushed with an image that was then deleted, long ago."""
    config, layer = Blob(b"{}"), Blob(f"layer {label}".encode())
    for blob in (config, layer):
        assert_2xx(await push_blob(client, NAME, blob))
    body = manifest(config, layer)
    assert_2xx(await put_manifest(client, NAME, "old", body))
    assert_2xx(await send(client, "DELETE", f"/v2/{NAME}/manifests/{Blob(body).digest}"))
    backdate(root, layer, 10 * GRACE)
    return layer


def pause_after(target: Any, method: str, reached: asyncio.Event, release: asyncio.Event) -> None:
    """Make ``target.method`` stop, once it returns, until ``release`` is set."""
    original: Callable[..., Awaitable[Any]] = getattr(target, method)

    async def paused(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        reached.set()
        await release.wait()
        return result

    setattr(target, method, paused)


@pytest.mark.parametrize("pause", ["before re-read", "before delete"])
async def test_a_push_racing_a_paused_collector(
    make_registry: ClientFactory, registry_environ: dict[str, str], pause: str
) -> None:
    client = await make_registry({"REGISTRY_STORAGE_GC_GRACEPERIOD": f"{GRACE:.0f}s"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    layer = await old_unreferenced_layer(client, root, pause)
    storage = client.app[STORAGE]
    collector = GarbageCollector(storage, grace=GRACE)
    reached, release = asyncio.Event(), asyncio.Event()
    if pause == "before re-read":  # the record is written, nothing re-read yet
        pause_after(collector.safety.condemned, "write", reached, release)
    else:  # re-read done (the blob still old): the deletion comes next
        pause_after(collector.safety, "condemn", reached, release)
    collection = asyncio.create_task(collector.run())
    await asyncio.wait_for(reached.wait(), timeout=30)

    # The client asks, is told yes, skips the upload and pushes a manifest naming it.
    head = await send(client, "HEAD", f"/v2/{NAME}/blobs/{layer.digest}")
    assert head.status == 200
    config = Blob(b'{"new": true}')
    assert_2xx(await push_blob(client, NAME, config))
    body = manifest(config, layer)
    put = asyncio.create_task(put_manifest(client, NAME, "new", body))
    await asyncio.sleep(0.5)
    assert not put.done(), "the PUT must wait while a collector holds the blob"
    release.set()
    report = await asyncio.wait_for(collection, timeout=30)
    reply = await asyncio.wait_for(put, timeout=30)

    if pause == "before re-read":
        assert reply.status == 201, reply
        assert layer.digest not in {str(d) for d, _ in report.blobs}
        pulled = await send(client, "GET", f"/v2/{NAME}/blobs/{layer.digest}")
        assert pulled.status == 200 and pulled.body == layer.data
    else:
        assert layer.digest in {str(d) for d, _ in report.blobs}
        assert_error(reply, 400, "MANIFEST_BLOB_UNKNOWN")
        gone = await send(client, "GET", f"/v2/{NAME}/manifests/{Blob(body).digest}")
        assert gone.status == 404
