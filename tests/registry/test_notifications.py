"""Notifications from a registry on loopback to a local receiver: delivery in the
background (a dead endpoint does not slow requests), retries through an outage with every
event arriving once and in order per repository, the memory bound, the ignore rules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from registry.keys import METRICS
from registry.notifications.notifier import NOTIFIER
from shared.htpasswd import format_htpasswd_line
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob, assert_2xx, push_blob, put_manifest, send
from tests.support.event_receiver import EventReceiver, notifications_env
from tests.support.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST


def blob(label: str) -> Blob:
    return Blob(hashlib.sha256(label.encode()).digest() * 8 + label.encode())


def image_manifest(config: Blob, layer: Blob) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": len(config.data)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": len(layer.data)}
            ],
        }
    ).encode()


async def push_image(client: RegistryClient, name: str, tag: str) -> list[tuple[str, str]]:
    """Push a config, a layer and a tagged manifest; the (action, digest) events expected."""
    config, layer = blob(f"{name}:{tag}:config"), blob(f"{name}:{tag}:layer")
    for item in (config, layer):
        assert_2xx(await push_blob(client, name, item))
    body = image_manifest(config, layer)
    assert_2xx(await put_manifest(client, name, tag, body))
    return [("push", config.digest), ("push", layer.digest), ("push", Blob(body).digest)]


def by_repository(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for event in events:
        target = event["target"]
        out.setdefault(target["repository"], []).append((event["action"], target["digest"]))
    return out


@pytest.fixture
async def receiver() -> AsyncIterator[EventReceiver]:
    """A receiver on a free port, not started: the endpoint is down until a test starts it."""
    events = EventReceiver()
    yield events
    await events.stop()


async def test_events_arrive_once_and_in_order_per_repository_after_an_outage(
    make_registry: ClientFactory, receiver: EventReceiver
) -> None:
    client = await make_registry(
        {
            "REGISTRY_NOTIFICATIONS": notifications_env(
                url=receiver.url, threshold=2, backoff="200ms", timeout="2s"
            ),
            # Metrics on (the in-process app binds no debug address): they count too.
            "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:0",
            "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        }
    )
    expected: dict[str, list[tuple[str, str]]] = {"one/app": [], "two/app": []}
    for round_ in range(3):  # interleaved pushes to two repositories while the port is closed
        for name in expected:
            expected[name] += await push_image(client, name, f"v{round_}")
    stats = client.app[NOTIFIER].stats()["test"]
    await asyncio.sleep(1.0)  # several tries fail and back off meanwhile
    assert receiver.events == []
    assert stats.failed >= 2
    assert stats.pending == 18

    await receiver.start()
    events = await receiver.wait_for(18)
    await asyncio.sleep(0.5)  # anything sent twice would arrive by now
    assert len(receiver.events) == 18
    assert len({event["id"] for event in receiver.events}) == 18
    assert by_repository(events) == expected
    assert (stats.delivered, stats.pending, stats.dropped) == (18, 0, 0)
    metrics = client.app[METRICS].registry
    labels = {"endpoint": "test"}
    assert metrics.get_sample_value("registry_notifications_delivered_total", labels) == 18
    assert metrics.get_sample_value("registry_notifications_failures_total", labels) == float(
        stats.failed
    )


async def test_a_request_does_not_wait_for_an_endpoint_that_hangs(
    make_registry: ClientFactory,
) -> None:
    hung: list[asyncio.StreamWriter] = []

    async def accept_and_never_answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hung.append(writer)

    server = await asyncio.start_server(accept_and_never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_registry(
            {
                "REGISTRY_NOTIFICATIONS": notifications_env(
                    url=f"http://127.0.0.1:{port}/events", timeout="30s"
                )
            }
        )
        started = time.monotonic()
        await push_image(client, "slow/endpoint", "v1")
        elapsed = time.monotonic() - started
        stats = client.app[NOTIFIER].stats()["test"]
        # Three requests, each of which would wait 30s for a synchronous delivery.
        assert elapsed < 10, elapsed
        assert stats.pending == 3 and stats.delivered == 0
        assert hung, "the endpoint was never tried"
    finally:
        for writer in hung:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_full_queue_drops_the_oldest_events_and_counts_them(
    make_registry: ClientFactory, receiver: EventReceiver
) -> None:
    client = await make_registry(
        {
            "REGISTRY_NOTIFICATIONS": notifications_env(
                url=receiver.url, queuelimit=4, threshold=1, backoff="100ms"
            ),
            "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:0",
            "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        }
    )
    blobs = [blob(f"bounded-{i}") for i in range(7)]
    for item in blobs:
        assert_2xx(await push_blob(client, "bounded/repo", item))
    stats = client.app[NOTIFIER].stats()["test"]
    assert (stats.pending, stats.dropped) == (4, 3)
    dropped = client.app[METRICS].registry.get_sample_value(
        "registry_notifications_dropped_total", {"endpoint": "test"}
    )
    assert dropped == 3
    await receiver.start()
    events = await receiver.wait_for(4)
    await asyncio.sleep(0.3)
    assert [event["target"]["digest"] for event in receiver.events] == [b.digest for b in blobs[3:]]
    assert (stats.delivered, stats.pending) == (4, 0)
    assert len(events) == 4


async def test_ignore_rules_keep_events_from_an_endpoint(
    make_registry: ClientFactory, receiver: EventReceiver
) -> None:
    await receiver.start()
    client = await make_registry(
        {
            "REGISTRY_NOTIFICATIONS": notifications_env(
                url=receiver.url,
                ignoredmediatypes=["application/octet-stream"],
                ignore={"actions": ["pull"]},
            )
        }
    )
    pushed = await push_image(client, "ignored/repo", "v1")
    manifest_digest = pushed[-1][1]
    assert (
        await send(client, "GET", f"/v2/ignored/repo/manifests/{manifest_digest}")
    ).status == 200
    deleted = await send(client, "DELETE", f"/v2/ignored/repo/manifests/{manifest_digest}")
    assert deleted.status == 202
    events = await receiver.wait_for(3)
    await asyncio.sleep(0.3)  # an ignored event would have arrived by now
    # Blob pushes (octet-stream) and the pull are ignored; the manifest push and the
    # two deletions (the manifest, then its tag) are not.
    assert [(e["action"], e["target"].get("digest"), e["target"].get("tag")) for e in events] == [
        ("push", manifest_digest, "v1"),
        ("delete", manifest_digest, None),
        ("delete", None, "v1"),
    ]


async def test_head_is_not_a_pull_and_the_request_id_is_the_clients(
    make_registry: ClientFactory, receiver: EventReceiver
) -> None:
    await receiver.start()
    client = await make_registry(
        {
            "REGISTRY_NOTIFICATIONS": notifications_env(
                url=receiver.url, ignore={"actions": ["push"]}
            )
        }
    )
    pushed = await push_image(client, "pulled/repo", "v1")
    layer = pushed[1][1]
    for method in ("HEAD", "GET"):
        for path in (f"/v2/pulled/repo/blobs/{layer}", "/v2/pulled/repo/manifests/v1"):
            reply = await send(client, method, path, headers={"X-Request-Id": f"{method}-1"})
            assert reply.status == 200
    events = await receiver.wait_for(2)
    await asyncio.sleep(0.3)
    assert [(e["action"], e["request"]["method"], e["request"]["id"]) for e in events] == [
        ("pull", "GET", "GET-1"),
        ("pull", "GET", "GET-1"),
    ]
    assert events[1]["target"]["tag"] == "v1"


async def test_the_actor_is_the_authenticated_user(
    make_registry: ClientFactory, receiver: EventReceiver, tmp_path: Path
) -> None:
    await receiver.start()
    users = tmp_path / "htpasswd"
    users.write_text(format_htpasswd_line("alice", "alice-password", cost=4) + "\n")
    client = await make_registry(
        {
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "test",
            "REGISTRY_AUTH_HTPASSWD_PATH": str(users),
            "REGISTRY_NOTIFICATIONS": notifications_env(url=receiver.url),
        }
    )
    credentials = base64.b64encode(b"alice:alice-password").decode()
    item = blob("by alice")
    started = await send(
        client,
        "POST",
        "/v2/alice/repo/blobs/uploads/",
        headers={"Authorization": f"Basic {credentials}"},
        params={"digest": item.digest},
        body=item.data,
    )
    assert started.status == 201, started
    (event,) = await receiver.wait_for(1)
    assert event["actor"] == {"name": "alice"}
    assert (event["action"], event["target"]["digest"]) == ("push", item.digest)


async def test_an_endpoint_that_redirects_gets_the_event_at_its_new_url(
    make_registry: ClientFactory, receiver: EventReceiver
) -> None:
    await receiver.start()
    moved = receiver.url.replace("/events", "/moved")
    client = await make_registry({"REGISTRY_NOTIFICATIONS": notifications_env(url=moved)})
    item = blob("redirected")
    assert_2xx(await push_blob(client, "moved/repo", item))
    (event,) = await receiver.wait_for(1)
    assert event["target"]["digest"] == item.digest
