"""What a manifest PUT that follows its blobs' uploads costs on the event loop, counted
over a real push (not timed: the machine is shared; issue 17)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.registry.conftest import ClientFactory
from tests.registry.helpers import Blob, push_blob, put_manifest
from tests.support.oci import make_image


async def test_a_manifest_put_reads_each_just_linked_layer_once(
    make_registry: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its blobs were linked by their uploads' commits in this process: the check of
    the references finds them remembered, and only the check in storage that online
    collection's protocol requires reads each link (it read every link twice)."""
    # With a blob-descriptor cache, as the bench's configuration has.
    registry = await make_registry({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "inmemory"})
    image = make_image(layer_count=2, layer_size=4096)
    for data in image.blobs.values():
        assert (await push_blob(registry, "app", Blob(data))).status == 201
    stats: list[str] = []
    real_stat = os.stat

    def recording(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recording)
    assert (await put_manifest(registry, "app", "v1", image.manifest)).status == 201
    monkeypatch.undo()
    for digest in image.blobs:
        link = f"/_layers/sha256/{digest.split(':')[1]}/link"
        assert sum(path.endswith(link) for path in stats) == 1, (digest, stats)
    pulled = await registry.get("/v2/app/manifests/v1")
    assert pulled.status == 200
    assert await pulled.read() == image.manifest
