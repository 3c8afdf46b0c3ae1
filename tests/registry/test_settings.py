"""Configuration that changes behaviour: URLs (prefix, host, relative, forwarded headers),
extra headers, read-only mode and upload purging."""

from __future__ import annotations

import os
import time
from pathlib import Path

from registry.keys import STORAGE
from registry.storage.purge import purge_uploads
from tests.registry.conftest import ClientFactory, RegistryClient


async def test_locations_are_absolute_and_honour_forwarded_headers(
    registry: RegistryClient,
) -> None:
    direct = await registry.post("/v2/app/blobs/uploads/")
    assert direct.headers["Location"].startswith(f"http://127.0.0.1:{registry.port}/v2/app/")
    proxied = await registry.post(
        "/v2/app/blobs/uploads/",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"},
    )
    assert proxied.headers["Location"].startswith("https://registry.example.com/v2/app/")
    rfc7239 = await registry.post(
        "/v2/app/blobs/uploads/",
        headers={"Forwarded": 'for=10.0.0.1;proto=https;host="r.example.org:8443"'},
    )
    assert rfc7239.headers["Location"].startswith("https://r.example.org:8443/v2/app/")
    hostile = await registry.post(
        "/v2/app/blobs/uploads/",
        headers={"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": "evil.com/<x>@y"},
    )
    assert hostile.headers["Location"].startswith(f"http://127.0.0.1:{registry.port}/v2/")


async def test_relative_urls_and_configured_host(make_registry: ClientFactory) -> None:
    relative = await make_registry({"REGISTRY_HTTP_RELATIVEURLS": "true"})
    response = await relative.post("/v2/app/blobs/uploads/")
    assert response.headers["Location"].startswith("/v2/app/blobs/uploads/")
    hosted = await make_registry({"REGISTRY_HTTP_HOST": "https://registry.example.net"})
    response = await hosted.post("/v2/app/blobs/uploads/")
    assert response.headers["Location"].startswith("https://registry.example.net/v2/app/")


async def test_prefix_moves_the_api(make_registry: ClientFactory) -> None:
    client = await make_registry({"REGISTRY_HTTP_PREFIX": "/mirror/"})
    assert (await client.get("/mirror/v2/")).status == 200
    response = await client.post("/mirror/v2/app/blobs/uploads/")
    assert response.status == 202
    assert "/mirror/v2/app/blobs/uploads/" in response.headers["Location"]
    assert (await client.get("/")).status == 200


async def test_configured_headers_are_added(make_registry: ClientFactory) -> None:
    client = await make_registry({"REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS": "[nosniff]"})
    response = await client.get("/v2/")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_read_only_mode_refuses_writes_and_serves_reads(
    make_registry: ClientFactory,
) -> None:
    writable = await make_registry()
    pushed = await writable.post(
        "/v2/app/blobs/uploads/",
        params={
            "digest": "sha256:" + "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        },
        data=b"foo",
    )
    assert pushed.status == 201
    readonly = await make_registry({"REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED": "true"})
    refused = await readonly.post("/v2/app/blobs/uploads/")
    assert refused.status == 405
    assert (await refused.json())["errors"][0]["code"] == "UNSUPPORTED"
    served = await readonly.get(pushed.headers["Location"].split(str(writable.port), 1)[1])
    assert await served.read() == b"foo"


async def test_abandoned_uploads_are_purged(registry: RegistryClient) -> None:
    started = await registry.post("/v2/app/blobs/uploads/")
    location = started.headers["Location"].split(str(registry.port), 1)[1]
    await registry.patch(location, data=b"abandoned")
    driver = registry.app[STORAGE].driver
    assert await purge_uploads(driver, older_than=3600) == 0
    assert await purge_uploads(driver, older_than=0, dry_run=True) == 1
    assert (await registry.get(location)).status == 204
    assert await purge_uploads(driver, older_than=0) == 1
    assert (await registry.get(location)).status == 404


async def _purged_by_the_age_of(
    registry: RegistryClient, tmp_path: Path, start_file: bytes | None
) -> None:
    """Leave a started upload as a crash while it starts can: no data file, and the start
    time's file empty (made, not yet written) or not made (``start_file`` None). It has no
    start time and no data to judge by: the age of what is left decides."""
    started = await registry.post("/v2/app/blobs/uploads/")
    location = started.headers["Location"].split(str(registry.port), 1)[1]
    upload_id = location.split("?", 1)[0].rsplit("/", 1)[1]
    driver = registry.app[STORAGE].driver
    upload = tmp_path / "registry-data/docker/registry/v2/repositories/app/_uploads" / upload_id
    (upload / "data").unlink()
    left = upload
    if start_file is None:
        (upload / "startedat").unlink()
    else:
        left = upload / "startedat"
        left.write_bytes(start_file)
    assert await purge_uploads(driver, older_than=3600) == 0  # made just now
    two_hours_ago = time.time() - 7200
    os.utime(left, (two_hours_ago, two_hours_ago))
    assert await purge_uploads(driver, older_than=3600) == 1
    assert not upload.exists()


async def test_an_upload_cut_short_before_its_data_is_purged_by_its_start_file(
    registry: RegistryClient, tmp_path: Path
) -> None:
    await _purged_by_the_age_of(registry, tmp_path, start_file=b"")


async def test_an_upload_cut_short_before_its_start_file_is_purged_by_its_directory(
    registry: RegistryClient, tmp_path: Path
) -> None:
    await _purged_by_the_age_of(registry, tmp_path, start_file=None)
