"""Bad input beyond the conformance suite (issue 2, "Bad input"): invalid digests, path
traversal, wrong Content-Length/Content-Range, garbage manifests and manifests naming
missing blobs, unknown uploads, the API version header and the error envelope. After
every rejected request nothing stored may change and the registry must keep serving.
(Limits and the API's other edges: test_api_limits.py.)"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.registry.helpers import (
    API_VERSION,
    OCTET,
    Blob,
    RegistryClient,
    Reply,
    assert_error,
    push_blob,
    put_manifest,
    raw_request,
    send,
    send_raw,
    snapshot,
)
from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST

NAME = "errors/repo"
DATA = b"0123456789abcdefghijklmnopqrstuvwxyz"
GOOD = Blob(DATA)


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def manifest(config: Blob, *layers: Blob, **extra: object) -> bytes:
    def desc(media_type: str, blob: Blob) -> dict[str, object]:
        return {"mediaType": media_type, "digest": blob.digest, "size": len(blob.data)}

    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc(OCI_CONFIG, config)}
    return json.dumps(doc | {"layers": [desc(OCI_LAYER_GZIP, b) for b in layers]} | extra).encode()


async def pushed(client: RegistryClient, blob: Blob, name: str = NAME) -> None:
    reply = await push_blob(client, name, blob)
    assert reply.status == 201, reply


async def assert_serving(client: RegistryClient) -> None:
    """The registry still answers and still takes a push and a pull."""
    assert (await send(client, "GET", "/v2/")).status == 200
    probe = Blob(uuid.uuid4().bytes)
    await pushed(client, probe, "health/probe")
    assert (await send(client, "GET", f"/v2/health/probe/blobs/{probe.digest}")).body == probe.data


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """What must not change: the registry's storage and everything beside it in tmp."""
    return tmp_path


async def seed(client: RegistryClient) -> RegistryClient:
    """One blob and one manifest tagged ``v1`` in NAME."""
    await pushed(client, GOOD)
    config = Blob(b"{}")
    await pushed(client, config)
    reply = await put_manifest(client, NAME, "v1", manifest(config, GOOD))
    assert reply.status == 201, reply
    return client


@pytest.fixture
async def seeded(registry: RegistryClient) -> RegistryClient:
    return await seed(registry)


# ------------------------------------------------------------------ base and headers


async def test_root_is_health_check_and_v2_base_is_empty_json(registry: RegistryClient) -> None:
    assert (await send(registry, "GET", "/")).status == 200
    base = await send(registry, "GET", "/v2/")
    assert base.status == 200 and base.json() == {}, base
    assert base.headers.get(API_VERSION[0]) == API_VERSION[1], base


async def test_every_v2_response_carries_the_api_version(seeded: RegistryClient) -> None:
    requests = [
        ("GET", "/v2/"),
        ("HEAD", f"/v2/{NAME}/blobs/{GOOD.digest}"),
        ("GET", f"/v2/{NAME}/blobs/{GOOD.digest}"),
        ("GET", f"/v2/{NAME}/blobs/sha256:{'0' * 64}"),
        ("GET", f"/v2/{NAME}/blobs/sha256:bad"),
        ("GET", f"/v2/{NAME}/manifests/v1"),
        ("GET", f"/v2/{NAME}/manifests/nope"),
        ("GET", f"/v2/{NAME}/tags/list"),
        ("GET", "/v2/no/such/repo/tags/list"),
        ("POST", f"/v2/{NAME}/blobs/uploads/"),
        ("GET", f"/v2/{NAME}/blobs/uploads/{uuid.uuid4()}"),
        ("GET", "/v2/_catalog"),
        ("GET", "/v2/_catalog?n=bad"),
        ("GET", f"/v2/{NAME}/no-such-endpoint"),
        ("PATCH", "/v2/"),
    ]
    for method, path in requests:
        reply = await send(seeded, method, path, body=b"" if method in ("POST", "PATCH") else None)
        assert reply.headers.get(API_VERSION[0]) == API_VERSION[1], (method, path, reply)
        assert reply.status < 500, (method, path, reply)
        if reply.status >= 400 and method != "HEAD":
            assert_error(reply, reply.status)


# ------------------------------------------------------------------ invalid digests

BAD_DIGESTS = [
    "sha256:totallywrong",
    "sha256:" + "a" * 63,
    "sha256:" + "A" * 64,
    "sha512:" + "a" * 64,
    "md5:" + "0" * 32,
    "sha256" + "0" * 64,
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
async def test_invalid_digest_in_url_is_400(
    seeded: RegistryClient, data_root: Path, digest: str
) -> None:
    before = snapshot(data_root)
    for method, path in [
        ("GET", f"/v2/{NAME}/blobs/{digest}"),
        ("HEAD", f"/v2/{NAME}/blobs/{digest}"),
        ("DELETE", f"/v2/{NAME}/blobs/{digest}"),
        ("GET", f"/v2/{NAME}/referrers/{digest}"),
    ]:
        reply = await send(seeded, method, path)
        if method == "HEAD":
            assert reply.status == 400, reply
        else:
            assert_error(reply, 400, "DIGEST_INVALID")
    if ":" in digest:  # without a colon it is a (valid or invalid) tag, not a digest
        for method in ("GET", "DELETE"):
            reply = await send(seeded, method, f"/v2/{NAME}/manifests/{digest}")
            assert_error(reply, 400, "DIGEST_INVALID")
    # A completing PUT and a monolithic POST with a bad digest store nothing.
    started = await send(seeded, "POST", f"/v2/{NAME}/blobs/uploads/")
    put = await send(seeded, "PUT", started.location, body=DATA, params={"digest": digest})
    assert_error(put, 400, "DIGEST_INVALID")
    post = await send(seeded, "POST", f"/v2/{NAME}/blobs/uploads/?digest={digest}", body=DATA)
    assert_error(post, 400, "DIGEST_INVALID")
    await send(seeded, "DELETE", started.location)
    assert snapshot(data_root) == before
    await assert_serving(seeded)


async def test_mount_with_invalid_digest_falls_back_to_an_upload(seeded: RegistryClient) -> None:
    params = {"mount": "sha256:totallywrong", "from": NAME}
    reply = await send(seeded, "POST", "/v2/other/repo/blobs/uploads/", params=params)
    assert reply.status == 202 and reply.location.startswith("/v2/other/repo/blobs/uploads/")


# ------------------------------------------------------------------ path traversal

ESCAPE = f"sha256:{hashlib.sha256(b'x').hexdigest()}"
TRAVERSALS = [
    ("GET", f"/v2/../../../../etc/blobs/{ESCAPE}"),
    ("POST", "/v2/x/../../../../tmp/escape/blobs/uploads/"),
    ("POST", "/v2/%2e%2e/%2e%2e/escape/blobs/uploads/"),
    ("POST", "/v2/%2e%2e%2f%2e%2e%2fescape/blobs/uploads/"),
    ("POST", f"/v2/{NAME}%2f..%2f..%2f..%2fescape/blobs/uploads/"),
    ("GET", f"/v2/{NAME}/blobs/sha256:..%2f..%2f..%2f..%2fetc%2fpasswd"),
    ("GET", f"/v2/{NAME}/blobs/sha256%3a..%2f..%2fescape"),
    ("GET", f"/v2/{NAME}/blobs/uploads/%2e%2e"),
    ("PATCH", f"/v2/{NAME}/blobs/uploads/..%2f..%2f..%2fescape"),
    ("PUT", f"/v2/{NAME}/blobs/uploads/..%2F..%2F..%2Fescape?digest={GOOD.digest}"),
    ("DELETE", f"/v2/{NAME}/blobs/uploads/%2e%2e%2f%2e%2e%2f{NAME}"),
    ("PUT", f"/v2/{NAME}/manifests/..%2f..%2f..%2fescape"),
    ("PUT", f"/v2/{NAME}/manifests/%2e%2e"),
    ("GET", f"/v2/{NAME}/tags/..%2f..%2f..%2fescape"),
]


@pytest.mark.parametrize(("method", "target"), TRAVERSALS)
async def test_path_traversal_is_refused(
    seeded: RegistryClient, data_root: Path, method: str, target: str
) -> None:
    before = snapshot(data_root)
    body = manifest(Blob(b"{}"), GOOD) if "manifests" in target else DATA
    headers = {"Content-Type": OCTET["Content-Type"], "Content-Length": str(len(body))}
    replies = await send_raw(seeded, raw_request(method, target, headers, body))
    assert replies and replies[0].status in (400, 404), replies
    assert snapshot(data_root) == before
    await assert_serving(seeded)


# ------------------------------------------------------------------ Content-Length / Content-Range


async def upload_with_ten_bytes(client: RegistryClient) -> str:
    started = await send(client, "POST", f"/v2/{NAME}/blobs/uploads/", body=b"")
    headers = {**OCTET, "Content-Range": "0-9"}
    first = await send(client, "PATCH", started.location, headers=headers, body=DATA[:10])
    assert first.status == 202 and first.headers.get("Range") == "0-9", first
    return first.location


@pytest.mark.parametrize(
    ("content_range", "chunk", "statuses"),
    [
        ("garbage", DATA[10:20], (416,)),
        ("19-10", DATA[10:20], (416,)),
        ("20-29", DATA[20:30], (416,)),  # starts after the end: out of order
        ("5-14", DATA[5:15], (416,)),  # overlaps what was already received
        ("10-29", DATA[10:20], (400, 416)),  # declares 20 bytes, sends 10
        ("10-14", DATA[10:20], (400, 416)),  # declares 5 bytes, sends 10
    ],
)
async def test_bad_content_range_leaves_the_upload_as_it_was(
    registry: RegistryClient, content_range: str, chunk: bytes, statuses: tuple[int, ...]
) -> None:
    location = await upload_with_ten_bytes(registry)
    headers = {**OCTET, "Content-Range": content_range}
    bad = await send(registry, "PATCH", location, headers=headers, body=chunk)
    assert_error(bad, statuses)
    if bad.status == 416:
        assert bad.headers.get("Range") == "0-9", bad
    status = await send(registry, "GET", location)
    assert status.status == 204 and status.headers.get("Range") == "0-9", status
    done = await send(registry, "PUT", location, body=DATA[10:], params={"digest": GOOD.digest})
    assert done.status == 201, done
    assert (await send(registry, "GET", f"/v2/{NAME}/blobs/{GOOD.digest}")).body == DATA


async def test_body_longer_than_content_length_is_not_the_blob(
    registry: RegistryClient, data_root: Path
) -> None:
    started = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/")
    target = f"{started.location}{'&' if '?' in started.location else '?'}digest={GOOD.digest}"
    headers = {"Content-Length": "10", **OCTET}
    # The registry sees a 10-byte body whose digest does not match (DIGEST_INVALID), or the
    # HTTP layer refuses the bytes past the declared end first (a plain 400): either way
    # the extra bytes never become part of a blob.
    replies = await send_raw(registry, raw_request("PUT", target, headers, DATA))
    assert replies and 400 <= replies[0].status < 500, replies
    for digest in (GOOD.digest, Blob(DATA[:10]).digest):
        assert (await send(registry, "HEAD", f"/v2/{NAME}/blobs/{digest}")).status == 404
    await assert_serving(registry)


async def test_body_cut_short_stores_nothing(registry: RegistryClient, data_root: Path) -> None:
    started = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/")
    target = f"{started.location}{'&' if '?' in started.location else '?'}digest={GOOD.digest}"
    headers = {"Content-Length": str(len(DATA) + 100), **OCTET}
    replies = await send_raw(registry, raw_request("PUT", target, headers, DATA), eof=True)
    assert all(r.status >= 400 for r in replies), replies
    assert (await send(registry, "HEAD", f"/v2/{NAME}/blobs/{GOOD.digest}")).status == 404
    await assert_serving(registry)


async def test_streamed_patch_without_content_length(registry: RegistryClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield DATA[:7]
        yield DATA[7:]

    started = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/")
    async with registry.patch(started.location, data=body(), headers=OCTET) as resp:
        assert resp.status == 202 and "Content-Length" not in resp.request_info.headers
        assert resp.headers.get("Range") == f"0-{len(DATA) - 1}"
        location = Reply(resp.status, resp.headers, b"").location
    done = await send(registry, "PUT", location, body=b"", params={"digest": GOOD.digest})
    assert done.status == 201, done


@pytest.mark.parametrize("monolithic", [True, False])
async def test_digest_mismatch_stores_nothing(
    registry: RegistryClient, data_root: Path, monolithic: bool
) -> None:
    wrong = Blob(DATA + b"!").digest
    if monolithic:
        reply = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/?digest={wrong}", body=DATA)
    else:
        started = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/")
        reply = await send(registry, "PUT", started.location, body=DATA, params={"digest": wrong})
    assert_error(reply, 400, "DIGEST_INVALID")
    for digest in (wrong, GOOD.digest):
        assert (await send(registry, "HEAD", f"/v2/{NAME}/blobs/{digest}")).status == 404
    await assert_serving(registry)


# ------------------------------------------------------------------ manifests

GARBAGE = [
    (b"blablabla", OCI_MANIFEST),
    (b"", OCI_MANIFEST),
    (b"{}", OCI_MANIFEST),
    (b"[]", OCI_MANIFEST),
    (b"null", OCI_MANIFEST),
    (b'{"schemaVersion": 2, "mediaType": "%s"' % OCI_MANIFEST.encode(), OCI_MANIFEST),
    (b'{"schemaVersion": 2, "config": {"digest": 5}, "layers": "none"}', OCI_MANIFEST),
    (b'{"schemaVersion": 2, "manifests": []}', OCI_MANIFEST),  # an index sent as a manifest
    (
        b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % OCI_INDEX.encode(),
        OCI_MANIFEST,
    ),
]


@pytest.mark.parametrize(("body", "media_type"), GARBAGE)
async def test_garbage_manifest_is_manifest_invalid(
    seeded: RegistryClient, data_root: Path, body: bytes, media_type: str
) -> None:
    before = snapshot(data_root)
    reply = await put_manifest(seeded, NAME, "garbage", body, media_type)
    assert_error(reply, 400, "MANIFEST_INVALID")
    assert_error(
        await send(seeded, "GET", f"/v2/{NAME}/manifests/garbage"), 404, "MANIFEST_UNKNOWN"
    )
    assert snapshot(data_root) == before
    await assert_serving(seeded)


async def test_manifest_with_a_malformed_layer_digest(
    seeded: RegistryClient, data_root: Path
) -> None:
    before = snapshot(data_root)
    body = manifest(Blob(b"{}"), GOOD).replace(GOOD.digest.encode(), b"sha256:zz")
    reply = await put_manifest(seeded, NAME, "bad-layer", body)
    assert_error(reply, 400, "MANIFEST_INVALID", "DIGEST_INVALID")
    assert snapshot(data_root) == before


async def test_manifest_naming_missing_blobs(seeded: RegistryClient, data_root: Path) -> None:
    config, missing, elsewhere = Blob(b"{}"), Blob(b"never pushed"), Blob(b"in another repo")
    await pushed(seeded, elsewhere, "other/repo")
    before = snapshot(data_root)
    child = {"mediaType": OCI_MANIFEST, "digest": missing.digest, "size": len(missing.data)}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child]})
    for body, media_type in [
        (manifest(missing, GOOD), OCI_MANIFEST),  # config missing
        (manifest(config, GOOD, missing), OCI_MANIFEST),  # a layer missing
        (manifest(config, elsewhere), OCI_MANIFEST),  # present, but not in this repository
        (index.encode(), OCI_INDEX),  # an index child missing
    ]:
        reply = await put_manifest(seeded, NAME, "incomplete", body, media_type)
        # 400 as Distribution, zot and Docker Hub answer, which clients expect.
        assert_error(reply, 400, "MANIFEST_BLOB_UNKNOWN")
    assert snapshot(data_root) == before
    await assert_serving(seeded)


async def test_manifest_size_limit_is_4_mib(seeded: RegistryClient, data_root: Path) -> None:
    base = manifest(Blob(b"{}"), GOOD, annotations={"pad": ""})
    limit = 4 * 1024 * 1024

    def padded(size: int) -> bytes:
        return base.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(base)) + b'"')

    before = snapshot(data_root)
    too_big = await put_manifest(seeded, NAME, "big", padded(limit + 1))
    assert_error(too_big, (400, 413), "MANIFEST_INVALID", "SIZE_INVALID")
    assert snapshot(data_root) == before
    fits = await put_manifest(seeded, NAME, "big", padded(limit - 1024))
    assert fits.status == 201, fits


async def test_unknown_things_are_404_with_their_code(seeded: RegistryClient) -> None:
    absent = f"sha256:{'0' * 64}"
    assert_error(await send(seeded, "GET", f"/v2/{NAME}/blobs/{absent}"), 404, "BLOB_UNKNOWN")
    assert_error(await send(seeded, "GET", f"/v2/{NAME}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_error(
        await send(seeded, "GET", f"/v2/{NAME}/manifests/{absent}"), 404, "MANIFEST_UNKNOWN"
    )
    assert_error(await send(seeded, "GET", "/v2/no/such/tags/list"), 404, "NAME_UNKNOWN")


# ------------------------------------------------------------------ uploads


async def test_unknown_upload_ids(seeded: RegistryClient, data_root: Path) -> None:
    other = await send(seeded, "POST", "/v2/other/repo/blobs/uploads/")
    before = snapshot(data_root)
    foreign = other.location.replace("/v2/other/repo/", f"/v2/{NAME}/")
    for location in [f"/v2/{NAME}/blobs/uploads/{uuid.uuid4()}", foreign]:
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            params = {"digest": GOOD.digest} if method == "PUT" else None
            body = DATA if method in ("PATCH", "PUT") else None
            reply = await send(seeded, method, location, body=body, params=params)
            assert_error(reply, 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot(data_root) == before
    cancelled = await send(seeded, "POST", f"/v2/{NAME}/blobs/uploads/")
    assert (await send(seeded, "DELETE", cancelled.location)).status == 204
    assert_error(await send(seeded, "GET", cancelled.location), 404, "BLOB_UPLOAD_UNKNOWN")
    await assert_serving(seeded)
