"""The events portside sends are the events Distribution 2.8.2 sends, field by field.

The same image is pushed with skopeo to Debian's ``docker-registry`` (2.8.2) and to
portside, each configured by the same file and notifying its own local receiver; then a
manifest and a blob are pulled, a blob mounted, a manifest and a blob deleted. The two
event streams must match in every field, except values that legitimately differ (ids,
timestamps, client and server addresses, ports), whose presence and shape are checked.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.event_receiver import EventReceiver
from tests.support.oci import OCI_MANIFEST, make_image, write_oci_layout
from tests.support.portside_servers import FILESYSTEM_CONFIG, REPOSITORY_ROOT, server_env
from tests.support.tools import free_port, isolated_client_env, require_tool, run_tool

NOTIFICATIONS = """\
notifications:
  events:
    includereferences: true
  endpoints:
    - name: receiver
      url: {url}
      headers:
        Authorization: [Bearer a-token]
      timeout: 2s
      threshold: 3
      backoff: 100ms
"""
EXPECTED_EVENTS = 10  # 3 blob pushes, a manifest push, 2 pulls, a mount, 3 deletions

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


def normalised(event: dict[str, Any], port: int) -> dict[str, Any]:
    """``event`` with what legitimately differs between the registries checked for shape
    and replaced by a placeholder (the key stays, so a missing key still shows)."""
    assert _UUID.fullmatch(event["id"]), event
    assert _TIMESTAMP.fullmatch(event["timestamp"]), event
    request, source = event["request"], event["source"]
    assert _UUID.fullmatch(request["id"]), event
    assert re.fullmatch(r"127\.0\.0\.1:\d+", request["addr"]), event
    assert request["host"] == f"127.0.0.1:{port}", event
    assert source["addr"] == f"{socket.gethostname()}:{port}", event
    assert _UUID.fullmatch(source["instanceID"]), event
    target = dict(event["target"])
    if "url" in target:
        target["url"] = target["url"].replace(f"127.0.0.1:{port}", "REGISTRY")
    return {
        **event,
        "id": "ID",
        "timestamp": "TIME",
        "target": target,
        "request": {**request, "id": "ID", "addr": "ADDR", "host": "HOST"},
        "source": {"addr": "ADDR", "instanceID": "ID"},
    }


def sort_key(event: dict[str, Any]) -> tuple[str, ...]:
    """skopeo uploads blobs concurrently: compare events in an order of their own."""
    target = event["target"]
    return tuple(
        str(value)
        for value in (
            event["action"],
            event["request"]["method"],
            target.get("repository"),
            target.get("digest"),
            target.get("tag"),
        )
    )


async def exercise(port: int, layout: Path, home: Path, layer: str, manifest: str) -> None:
    """Push with skopeo, then pull, mount and delete with plain HTTP."""
    pushed = await run_tool(
        require_tool("skopeo"),
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:v1",
        f"docker://127.0.0.1:{port}/ref/image:v1",
        env=isolated_client_env(str(home)),
    )
    assert pushed.returncode == 0, pushed.stderr
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        steps = [
            ("GET", "/v2/ref/image/manifests/v1", 200),
            ("GET", f"/v2/ref/image/blobs/{layer}", 200),
            ("POST", f"/v2/other/image/blobs/uploads/?mount={layer}&from=ref/image", 201),
            ("DELETE", f"/v2/ref/image/manifests/{manifest}", 202),
            ("DELETE", f"/v2/other/image/blobs/{layer}", 202),
        ]
        for method, path, status in steps:
            headers = {"Accept": OCI_MANIFEST, "User-Agent": "notifications-test"}
            async with session.request(method, path, headers=headers) as response:
                assert response.status == status, (method, path, await response.text())


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[EventReceiver, EventReceiver]]:
    pair = (EventReceiver(), EventReceiver())
    for receiver in pair:
        await receiver.start()
    yield pair
    for receiver in pair:
        await receiver.stop()


async def run_registry(
    command: list[str], tmp_path: Path, label: str, receiver: EventReceiver
) -> tuple[list[dict[str, Any]], int]:
    """Serve with ``command``, exercise it, and return the events and the port."""
    port = free_port()
    config = tmp_path / f"{label}.yml"
    config.write_text(
        FILESYSTEM_CONFIG.format(root=tmp_path / label, port=port)
        + NOTIFICATIONS.format(url=receiver.url)
    )
    image = make_image(layer_count=2, layer_size=4096, seed="same-image")
    layout = tmp_path / f"{label}-layout"
    write_oci_layout(layout, image, tag="v1")
    process = await asyncio.create_subprocess_exec(
        *command,
        "serve",
        str(config),
        cwd=REPOSITORY_ROOT,
        env=server_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_ready(port)
        layer = next(digest for digest in image.blobs if image.blobs[digest] in image.layers)
        home = tmp_path / f"{label}-home"
        home.mkdir()
        await exercise(port, layout, home, layer, image.manifest_digest)
        await receiver.wait_for(EXPECTED_EVENTS)
        await asyncio.sleep(0.5)  # any further event would arrive by now
    finally:
        process.terminate()
        await process.wait()
    return receiver.events, port


async def wait_ready(port: int) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for _ in range(400):
            try:
                async with session.get("/v2/") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the registry on port {port} did not start")


async def test_events_match_the_reference_registry(
    tmp_path: Path, receivers: tuple[EventReceiver, EventReceiver]
) -> None:
    reference = require_tool("docker-registry")
    theirs, their_port = await run_registry([reference], tmp_path, "reference", receivers[0])
    ours, our_port = await run_registry(
        [sys.executable, "-m", "registry"],
        tmp_path,
        "portside",
        receivers[1],
    )
    assert len(theirs) == len(ours) == EXPECTED_EVENTS
    expected = sorted((normalised(e, their_port) for e in theirs), key=sort_key)
    actual = sorted((normalised(e, our_port) for e in ours), key=sort_key)
    for mine, reference_event in zip(actual, expected, strict=True):
        assert mine == reference_event
    # The envelope: one event per POST, the media type, the configured header.
    for receiver in receivers:
        assert all(len(delivery.events) == 1 for delivery in receiver.deliveries)
        for delivery in receiver.deliveries:
            assert (
                delivery.headers["Content-Type"]
                == "application/vnd.docker.distribution.events.v1+json"
            )
            assert delivery.headers["Authorization"] == "Bearer a-token"
