"""Fixtures of the pull-through cache's tests: a real open upstream (portside's registry
in a child process), a counting, fault-injecting proxy in front of it, and a mirror (the
registry app on loopback) configured with ``REGISTRY_PROXY_*`` as an operator would."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import send
from tests.support.oci import OCI_MANIFEST, Image, make_image
from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.upstreams import FaultyProxy, push_image


@pytest.fixture
def open_upstream(tmp_path: Path) -> Iterator[ServerProcess]:
    """portside's registry without auth, in a child process: the open upstream."""
    directory = tmp_path / "upstream"
    directory.mkdir()
    server = filesystem_registry(directory, REGISTRY_LOG_LEVEL="error")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def faulty(open_upstream: ServerProcess) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(open_upstream.url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def image(open_upstream: ServerProcess) -> Image:
    """A three-layer image pushed to the open upstream as ``library/app:v1``."""
    pushed = make_image(layer_count=3, layer_size=256 * 1024, seed="mirror")
    async with aiohttp.ClientSession() as session:
        await push_image(session, open_upstream.url, "library/app", "v1", pushed)
    return pushed


@pytest.fixture
async def mirror(make_registry: ClientFactory, faulty: FaultyProxy) -> RegistryClient:
    """A registry:2-style mirror of the open upstream, through the faulty proxy."""
    return await make_registry(
        {
            "REGISTRY_PROXY_REMOTEURL": faulty.url,
            # Metrics on (the in-process app binds no debug address): they count too.
            "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:0",
            "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        }
    )


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


ACCEPT = {"Accept": OCI_MANIFEST}


async def pull(client: RegistryClient, name: str, tag: str, image: Image) -> None:
    """Pull ``name:tag`` through ``client`` and check every byte against ``image``."""
    manifest = await send(client, "GET", f"/v2/{name}/manifests/{tag}", headers=ACCEPT)
    assert manifest.status == 200, manifest
    assert manifest.body == image.manifest
    assert manifest.headers["Docker-Content-Digest"] == image.manifest_digest
    for digest, data in image.blobs.items():
        blob = await send(client, "GET", f"/v2/{name}/blobs/{digest}")
        assert blob.status == 200, blob
        assert sha256(blob.body) == digest and blob.body == data
