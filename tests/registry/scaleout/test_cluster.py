"""Three registry processes sharing one S3 bucket (moto or RGW), one Redis and one http.secret,
behind a real nginx balancing round-robin: a chunked push whose every request lands on
another instance, pulls through each instance byte for byte, and the same push with an
instance stopped half-way (nginx sends the requests it cannot deliver to the next)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator

import aiohttp
import pytest

from tests.registry.scaleout.cluster import INSTANCE_HEADER, Cluster, instance_settings
from tests.support.backing_services import s3_kinds, shared_services

MIB = 1024 * 1024
NAME = "team/app"
# Around S3's 5 MiB part minimum: short tails, a part and a tail, tiny chunks.
CHUNKS = [3 * MIB, 6 * MIB + 1, 1 * MIB, 1, 7 * MIB - 1, 2 * MIB]


@pytest.fixture(scope="module", params=s3_kinds())
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One cluster for this module's tests on each S3 server (starting one takes seconds)."""
    services = shared_services()
    s3_server, redis_server = services.s3_server(request.param), services.redis_server()
    settings = instance_settings(
        s3_server, s3_server.create_bucket(), redis_server.addr, f"shared-secret-{uuid.uuid4()}"
    )
    running = Cluster(tmp_path_factory.mktemp("cluster"), settings)
    running.start()
    yield running
    running.stop()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunked_push(
    session: aiohttp.ClientSession,
    base: str,
    data: bytes,
    after: Callable[[int], None] = lambda request: None,
) -> list[str]:
    """Push ``data`` in CHUNKS; the instance label of every response, in order."""
    labels: list[str] = []
    async with session.post(f"{base}/v2/{NAME}/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        labels.append(response.headers[INSTANCE_HEADER])
        location = response.headers["Location"]
    assert location.startswith(base + "/"), location  # the balancer's address, not an instance's
    at = 0
    for size in CHUNKS:
        after(len(labels))
        chunk = data[at : at + size]
        headers = {
            "Content-Range": f"{at}-{at + size - 1}",
            "Content-Type": "application/octet-stream",
        }
        async with session.patch(location, data=io.BytesIO(chunk), headers=headers) as response:
            assert response.status == 202, await response.text()
            assert response.headers["Range"] == f"0-{at + size - 1}"
            labels.append(response.headers[INSTANCE_HEADER])
            location = response.headers["Location"]
        at += size
    after(len(labels))
    async with session.put(location, params={"digest": digest_of(data)}) as response:
        assert response.status == 201, await response.text()
        labels.append(response.headers[INSTANCE_HEADER])
    return labels


async def push_manifest(session: aiohttp.ClientSession, base: str, layer: bytes) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    async with session.post(
        f"{base}/v2/{NAME}/blobs/uploads/", params={"digest": digest_of(config)}, data=config
    ) as response:
        assert response.status == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    async with session.put(
        f"{base}/v2/{NAME}/manifests/v1",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    ) as response:
        assert response.status == 201, await response.text()
    return manifest


async def pull(session: aiohttp.ClientSession, base: str, path: str) -> bytes:
    async with session.get(f"{base}{path}") as response:
        assert response.status == 200, (base, path, response.status)
        return await response.read()


async def test_a_chunked_push_across_three_instances_pulls_identically(cluster: Cluster) -> None:
    data = os.urandom(sum(CHUNKS))
    async with aiohttp.ClientSession() as session:
        labels = await chunked_push(session, cluster.balancer.url, data)
        # Round-robin: no two consecutive requests on the same instance, all three used.
        assert all(a != b for a, b in itertools.pairwise(labels)), labels
        assert set(labels) == {"a", "b", "c"}
        manifest = await push_manifest(session, cluster.balancer.url, data)
        for base in [i.url for i in cluster.instances] + [cluster.balancer.url]:
            assert await pull(session, base, f"/v2/{NAME}/blobs/{digest_of(data)}") == data
            assert await pull(session, base, f"/v2/{NAME}/manifests/v1") == manifest


async def test_the_push_goes_on_when_an_instance_stops_half_way(cluster: Cluster) -> None:
    data = os.urandom(sum(CHUNKS))
    stopped = cluster.instances[1]

    def stop_after_two(request_number: int) -> None:
        if request_number == 2:
            stopped.stop()

    try:
        async with aiohttp.ClientSession() as session:
            labels = await chunked_push(session, cluster.balancer.url, data, after=stop_after_two)
            assert stopped.label not in labels[2:], labels
            assert {"a", "c"} <= set(labels[2:])
            for base in [cluster.instances[0].url, cluster.instances[2].url, cluster.balancer.url]:
                assert await pull(session, base, f"/v2/{NAME}/blobs/{digest_of(data)}") == data
    finally:
        stopped.start()  # on its port again, for whatever runs next
