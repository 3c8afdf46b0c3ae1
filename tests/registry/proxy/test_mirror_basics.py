"""The registry:2-compatible mirror: ``REGISTRY_PROXY_REMOTEURL`` makes the registry a
pull-through cache of one upstream; pulls fill the cache, pushes are refused with
Distribution's error, tags are re-checked with the upstream, a warm cache survives the
upstream going away, and nothing is fetched twice."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from registry.keys import CONFIG, METRICS, MIRRORS, STORAGE
from registry.storage.pulls import FLUSH_INTERVAL
from registry.storage.retention import RetentionRun
from registry.wiring import mirror_retention_policies
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import assert_error, send
from tests.registry.proxy.conftest import ACCEPT, pull, sha256
from tests.support.oci import OCI_MANIFEST, Image, make_image
from tests.support.portside_servers import ServerProcess
from tests.support.upstreams import FaultyProxy, push_image


async def test_pulls_fill_the_cache_once(
    mirror: RegistryClient, faulty: FaultyProxy, image: Image
) -> None:
    await pull(mirror, "library/app", "v1", image)
    await pull(mirror, "library/app", "v1", image)
    await pull(mirror, "library/app", image.manifest_digest, image)
    for digest in image.blobs:
        assert faulty.blob_gets(digest) == 1, digest
    # The manifest was fetched once; the tag is re-checked by HEAD on each tag pull.
    manifest_gets = sum(
        n for (m, p), n in faulty.counts.items() if m == "GET" and "/manifests/" in p
    )
    assert manifest_gets == 1
    head = await send(mirror, "HEAD", f"/v2/library/app/blobs/{image.manifest_digest}")
    assert head.status == 200


async def test_pushes_and_deletes_are_refused_as_distribution_does(
    mirror: RegistryClient, image: Image
) -> None:
    started = await send(mirror, "POST", "/v2/library/app/blobs/uploads/")
    assert_error(started, 405, "UNSUPPORTED")
    put = await send(
        mirror,
        "PUT",
        "/v2/library/app/manifests/v2",
        headers={"Content-Type": OCI_MANIFEST},
        body=image.manifest,
    )
    assert_error(put, 405, "UNSUPPORTED")
    deleted = await send(mirror, "DELETE", f"/v2/library/app/manifests/{image.manifest_digest}")
    assert_error(deleted, 405, "UNSUPPORTED")


async def test_a_moved_tag_is_followed(
    mirror: RegistryClient, open_upstream: ServerProcess, image: Image
) -> None:
    await pull(mirror, "library/app", "v1", image)
    newer = make_image(layer_count=1, layer_size=1024, seed="newer")
    async with aiohttp.ClientSession() as session:
        await push_image(session, open_upstream.url, "library/app", "v1", newer)
    await pull(mirror, "library/app", "v1", newer)


async def test_unknown_names_are_the_spec_s_errors(mirror: RegistryClient, image: Image) -> None:
    missing = await send(mirror, "GET", "/v2/library/app/manifests/nope", headers=ACCEPT)
    assert_error(missing, 404, "MANIFEST_UNKNOWN")
    digest = sha256(b"not there")
    blob = await send(mirror, "GET", f"/v2/library/app/blobs/{digest}")
    assert_error(blob, 404, "BLOB_UNKNOWN")
    head = await send(mirror, "HEAD", f"/v2/library/app/blobs/{digest}")
    assert head.status == 404


async def test_a_warm_cache_serves_while_the_upstream_is_down(
    mirror: RegistryClient, faulty: FaultyProxy, image: Image, caplog: pytest.LogCaptureFixture
) -> None:
    await pull(mirror, "library/app", "v1", image)
    assert mirror.app[MIRRORS].stale_served == 0
    faulty.refuse = True
    await pull(mirror, "library/app", "v1", image)
    # Said in the log and counted (for the metrics endpoint).
    assert mirror.app[MIRRORS].stale_served == 1
    served = mirror.app[METRICS].registry.get_sample_value(
        "registry_proxy_stale_served_total", {"upstream": "/"}
    )
    assert served == 1
    assert any("serving cached library/app:v1" in r.getMessage() for r in caplog.records)
    await pull(mirror, "library/app", image.manifest_digest, image)
    # What was never cached cannot be served: 503, not a 500 or a hang.
    other = await send(mirror, "GET", "/v2/library/other/manifests/v1", headers=ACCEPT)
    assert_error(other, 503, "UNAVAILABLE")


async def test_servestale_false_fails_instead(
    make_registry: ClientFactory, faulty: FaultyProxy, image: Image
) -> None:
    mirror = await make_registry(
        {"REGISTRY_PROXY_REMOTEURL": faulty.url, "REGISTRY_PROXY_SERVESTALE": "false"}
    )
    await pull(mirror, "library/app", "v1", image)
    faulty.refuse = True
    stale = await send(mirror, "GET", "/v2/library/app/manifests/v1", headers=ACCEPT)
    assert_error(stale, 503, "UNAVAILABLE")
    # Content named by digest never goes stale.
    await pull(mirror, "library/app", image.manifest_digest, image)


async def test_a_cached_tag_not_pulled_for_ttl_is_dropped(
    make_registry: ClientFactory, faulty: FaultyProxy, image: Image
) -> None:
    mirror = await make_registry(
        {"REGISTRY_PROXY_REMOTEURL": faulty.url, "REGISTRY_PROXY_TTL": "1h"}
    )
    await pull(mirror, "library/app", "v1", image)
    storage, config = mirror.app[STORAGE], mirror.app[CONFIG]
    await storage.flush_pulls()
    policies = mirror_retention_policies(config)
    lag = config.storage.retention.pullresolution.total_seconds() + FLUSH_INTERVAL
    now = time.time()
    within = await RetentionRun(storage, policies, dry_run=False, now=now + 1800).run()
    assert within.deleted == []
    report = await RetentionRun(storage, policies, dry_run=False, now=now + 3600 + lag + 60).run()
    assert {(d.kind, d.tag) for d in report.deleted} == {("tag", "v1"), ("manifest", None)}
    # Gone from the cache: with the upstream down it can no longer be served.
    faulty.refuse = True
    gone = await send(mirror, "GET", "/v2/library/app/manifests/v1", headers=ACCEPT)
    assert_error(gone, 503, "UNAVAILABLE")
    faulty.refuse = False
    await pull(mirror, "library/app", "v1", image)


async def test_tags_are_the_upstream_s_and_the_cached_ones_when_it_is_down(
    mirror: RegistryClient, faulty: FaultyProxy, open_upstream: ServerProcess, image: Image
) -> None:
    other = make_image(layer_count=1, layer_size=1024, seed="tags")
    async with aiohttp.ClientSession() as session:
        for tag in ("v2", "v3"):
            await push_image(session, open_upstream.url, "library/app", tag, other)
    listed = await send(mirror, "GET", "/v2/library/app/tags/list")
    assert listed.json() == {"name": "library/app", "tags": ["v1", "v2", "v3"]}
    page = await send(mirror, "GET", "/v2/library/app/tags/list?n=1&last=v1")
    assert page.json()["tags"] == ["v2"] and "Link" in page.headers
    await pull(mirror, "library/app", "v1", image)
    faulty.refuse = True
    listed = await send(mirror, "GET", "/v2/library/app/tags/list")
    assert listed.json() == {"name": "library/app", "tags": ["v1"]}
    faulty.refuse = False
    unknown = await send(mirror, "GET", "/v2/library/nothing/tags/list")
    assert_error(unknown, 404, "NAME_UNKNOWN")


async def test_concurrent_pulls_of_one_tag_make_one_upstream_check(
    mirror: RegistryClient, faulty: FaultyProxy, image: Image
) -> None:
    faulty.manifest_delay = 0.5  # every client asks before the upstream answers
    path = "/v2/library/app/manifests/v1"
    replies = await asyncio.gather(*(send(mirror, "GET", path, headers=ACCEPT) for _ in range(20)))
    assert all(r.status == 200 and r.body == image.manifest for r in replies)
    assert faulty.counts[("HEAD", path)] == 1
    assert faulty.counts[("GET", f"/v2/library/app/manifests/{image.manifest_digest}")] == 1
