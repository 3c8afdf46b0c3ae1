"""Tag lists served by ``PORTSIDE_WORKERS=2``: each worker keeps its own cached lists, and
a tag pushed or deleted through one worker is listed by the other on the next request."""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

from tests.support.oci import make_image
from tests.support.portside_servers import ServerProcess, filesystem_registry

LISTINGS = 16  # each on a new connection: the kernel spreads them over both workers


def call(
    registry: ServerProcess, method: str, path: str, body: bytes = b"", content_type: str = ""
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def listed(registry: ServerProcess) -> list[list[str]]:
    pages = []
    for _ in range(LISTINGS):
        status, body = call(registry, "GET", "/v2/app/tags/list")
        assert status == 200
        pages.append(json.loads(body)["tags"])
    return pages


def test_every_worker_lists_a_tag_another_worker_pushed_in_the_same_clock_tick(
    tmp_path: Path,
) -> None:
    registry = filesystem_registry(
        tmp_path, PORTSIDE_WORKERS="2", REGISTRY_STORAGE_DELETE_ENABLED="true"
    )
    registry.start()
    try:
        image = make_image(layer_count=1, layer_size=1024, seed="workers")
        for digest, content in image.blobs.items():
            status, _ = call(registry, "POST", f"/v2/app/blobs/uploads/?digest={digest}", content)
            assert status == 201

        def push(tag: str) -> None:
            status, _ = call(
                registry,
                "PUT",
                f"/v2/app/manifests/{tag}",
                image.manifest,
                "application/vnd.oci.image.manifest.v1+json",
            )
            assert status == 201

        directory = tmp_path / "data/docker/registry/v2/repositories/app/_manifests/tags"
        push("a")
        # A directory time too recent to vouch for (in the future, so that no stall of a
        # loaded machine ages it past the guard), kept through the next changes as if
        # they had all landed in one tick of the kernel's clock.
        tick = time.time_ns() + 600 * 10**9
        os.utime(directory, ns=(tick, tick))
        assert listed(registry) == [["a"]] * LISTINGS
        push("b")
        os.utime(directory, ns=(tick, tick))
        assert listed(registry) == [["a", "b"]] * LISTINGS
        status, _ = call(registry, "DELETE", "/v2/app/manifests/a")
        assert status == 202
        os.utime(directory, ns=(tick, tick))
        assert listed(registry) == [["b"]] * LISTINGS
    finally:
        registry.stop()
