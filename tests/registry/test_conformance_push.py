"""The OCI conformance suite's Push workflow (02_push_test.go), checks U1-U29 of
CONFORMANCE.md: streamed, monolithic and chunked uploads, cross-repository mounts,
manifest uploads, teardown."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.registry.helpers import (
    OCTET,
    Blob,
    Body,
    Check,
    RegistryClient,
    Reply,
    Skipped,
    Suite,
    numbered,
    run_one,
    send,
)
from tests.support.oci import OCI_MANIFEST


@dataclass
class PushState:
    last: Reply | None = None
    prev: Reply | None = None
    empty_layer_ref: str = ""


Step = tuple[str, Body[PushState]]


def uploads(s: Suite, name: str | None = None) -> str:
    return f"/v2/{name or s.name}/blobs/uploads/"


# ------------------------------------------------------------- Blob Upload Streamed


async def streamed_patch(s: Suite, st: PushState) -> None:
    started = await send(s.client, "POST", uploads(s))
    assert started.location, started
    reply = await send(s.client, "PATCH", started.location, headers=OCTET, body=s.data.blob_a.data)
    assert reply.status == 202, reply
    st.last = reply


async def streamed_put(s: Suite, st: PushState) -> None:
    assert st.last is not None, "no PATCH response"
    # The suite sets Content-Length: 42 but sends no body; Go puts Content-Length: 0 on the wire.
    reply = await send(
        s.client,
        "PUT",
        st.last.location,
        headers=OCTET,
        body=b"",
        params={"digest": s.data.blob_a.digest},
    )
    assert reply.status == 201, reply
    assert reply.headers.get("Location"), reply


# ------------------------------------------------------------- Blob Upload Monolithic


async def get_nonexistent_blob(s: Suite, st: PushState) -> None:
    reply = await send(s.client, "GET", f"/v2/{s.name}/blobs/{s.data.dummy_digest}")
    assert reply.status == 404, reply


async def post_with_digest(s: Suite, st: PushState) -> None:
    config = s.data.configs[1]
    reply = await send(
        s.client,
        "POST",
        uploads(s),
        headers=OCTET,
        body=config.data,
        params={"digest": config.digest},
    )
    assert reply.headers.get("Location"), reply
    assert reply.status in (201, 202), reply
    st.last = reply


async def get_after_post(s: Suite, st: PushState) -> None:
    assert st.last is not None, "no POST response"
    reply = await send(s.client, "GET", f"/v2/{s.name}/blobs/{s.data.configs[1].digest}")
    assert reply.status == (404 if st.last.status == 202 else 200), reply


async def post_session(s: Suite, st: PushState) -> None:
    reply = await send(s.client, "POST", uploads(s))
    assert reply.status == 202, reply
    st.last = reply


async def monolithic_put(s: Suite, st: PushState) -> None:
    assert st.last is not None, "no POST response"
    await _put_whole(s, st.last.location, s.data.configs[1])


def get_existing(pick: str) -> Step:
    async def run(s: Suite, st: PushState) -> None:
        blob = s.data.layer if pick == "layer" else s.data.configs[1]
        reply = await send(s.client, "GET", f"/v2/{s.name}/blobs/{blob.digest}")
        assert reply.status == 200, reply

    what = "layer" if pick == "layer" else "blob"
    return f"GET request to existing {what} should yield 200 response", run


async def monolithic_layer(s: Suite, st: PushState) -> None:
    started = await send(s.client, "POST", uploads(s))
    await _put_whole(s, started.location, s.data.layer)


async def _put_whole(s: Suite, location: str, blob: Blob) -> None:
    reply = await send(
        s.client, "PUT", location, headers=OCTET, body=blob.data, params={"digest": blob.digest}
    )
    assert reply.headers.get("Location"), reply
    assert reply.status == 201, reply


# ------------------------------------------------------------- Blob Upload Chunked


async def _post_empty(s: Suite) -> Reply:
    reply = await send(s.client, "POST", uploads(s), headers={"Content-Length": "0"}, body=b"")
    assert reply.headers.get("Location"), reply
    return reply


async def _patch(s: Suite, location: str, chunk: bytes, content_range: str) -> Reply:
    headers = {**OCTET, "Content-Length": str(len(chunk)), "Content-Range": content_range}
    return await send(s.client, "PATCH", location, headers=headers, body=chunk)


async def out_of_order(s: Suite, st: PushState) -> None:
    started = await _post_empty(s)
    # A registry may demand bigger chunks; the suite then rebuilds blob B to fit.
    minimum = int(started.headers.get("OCI-Chunk-Min-Length", "0"))
    if minimum > len(s.data.chunk1):
        s.data.rechunk(minimum * 2 - 2, s.rng)
    reply = await _patch(s, started.location, s.data.chunk2, s.data.range2)
    assert reply.status == 416, reply


async def first_chunk(s: Suite, st: PushState) -> None:
    started = await _post_empty(s)
    st.prev = started
    reply = await _patch(s, started.location, s.data.chunk1, s.data.range1)
    assert reply.status == 202, reply
    assert reply.headers.get("Range") == s.data.range1, reply
    st.last = reply


async def retry_chunk(s: Suite, st: PushState) -> None:
    assert st.prev is not None, "no upload session"
    reply = await _patch(s, st.prev.location, s.data.chunk1, s.data.range1)
    assert reply.status == 416, reply


async def stale_status(s: Suite, st: PushState) -> None:
    assert st.prev is not None, "no upload session"
    reply = await send(s.client, "GET", st.prev.location)
    assert reply.status == 204, reply
    assert reply.headers.get("Location"), reply
    assert reply.headers.get("Range") == s.data.range1, reply
    st.last = reply


async def second_chunk(s: Suite, st: PushState) -> None:
    assert st.last is not None, "no upload status"
    reply = await _patch(s, st.last.location, s.data.chunk2, s.data.range2)
    assert reply.status == 202, reply
    assert reply.headers.get("Location"), reply
    st.last = reply


async def chunked_put(s: Suite, st: PushState) -> None:
    assert st.last is not None, "no PATCH response"
    reply = await send(
        s.client,
        "PUT",
        st.last.location,
        headers={**OCTET, "Content-Length": "0"},
        body=b"",
        params={"digest": s.data.blob_b.digest},
    )
    assert reply.status == 201, reply
    assert reply.headers.get("Location"), reply


# ------------------------------------------------------------- Cross-Repository Blob Mount


async def mount_without_from(s: Suite, st: PushState) -> None:
    reply = await send(
        s.client, "POST", uploads(s, s.crossmount), params={"mount": s.data.dummy_digest}
    )
    assert reply.status == 202, reply
    assert reply.headers.get("Location"), reply


async def mount_from(s: Suite, st: PushState) -> None:
    params = {"mount": s.data.blob_a.digest, "from": s.name}
    reply = await send(s.client, "POST", uploads(s, s.crossmount), params=params)
    assert reply.status in (201, 202), reply
    st.last = reply


async def get_mounted(s: Suite, st: PushState) -> None:
    assert st.last is not None
    if st.last.status != 201:
        raise Skipped("the mount answered 202")
    assert st.last.location == f"/v2/{s.crossmount}/blobs/{s.data.blob_a.digest}", st.last
    reply = await send(s.client, "GET", st.last.location)
    assert reply.status == 200, reply


async def mount_fell_back(s: Suite, st: PushState) -> None:
    assert st.last is not None
    if st.last.status != 202:
        raise Skipped("the mount answered 201")
    assert st.last.location.startswith(f"/v2/{s.crossmount}/blobs/uploads/"), st.last


async def automatic_crossmount(s: Suite, st: PushState) -> None:
    raise Skipped("runs only with OCI_AUTOMATIC_CROSSMOUNT set")


# ------------------------------------------------------------- Manifest Upload


async def get_nonexistent_manifest(s: Suite, st: PushState) -> None:
    reply = await send(s.client, "GET", f"/v2/{s.name}/manifests/.INVALID_MANIFEST_NAME")
    assert reply.status == 404, reply


async def put_tags(s: Suite, st: PushState) -> None:
    for i in range(4):
        reply = await send(
            s.client,
            "PUT",
            f"/v2/{s.name}/manifests/test{i}",
            headers={"Content-Type": OCI_MANIFEST},
            body=s.data.manifests[1].data,
        )
        assert reply.headers.get("Location"), reply
        assert reply.status == 201, reply


async def put_no_layers(s: Suite, st: PushState) -> None:
    reply = await send(
        s.client,
        "PUT",
        f"/v2/{s.name}/manifests/emptylayer",
        headers={"Content-Type": OCI_MANIFEST},
        body=s.data.empty_layer_manifest.data,
    )
    # The suite only warns when this is refused; a 201 must carry a Location.
    if reply.status == 201:
        st.empty_layer_ref = reply.headers.get("Location", "")
        assert st.empty_layer_ref, reply


async def get_by_digest(s: Suite, st: PushState) -> None:
    digest = s.data.manifests[1].digest
    headers = {"Accept": OCI_MANIFEST}
    reply = await send(s.client, "GET", f"/v2/{s.name}/manifests/{digest}", headers=headers)
    assert reply.status == 200, reply


# ------------------------------------------------------------- Teardown


async def delete_manifests(s: Suite, st: PushState) -> None:
    digests = [s.data.manifests[1].digest]
    if st.empty_layer_ref:
        digests.append(s.data.empty_layer_manifest.digest)
    for digest in digests:
        reply = await send(s.client, "DELETE", f"/v2/{s.name}/manifests/{digest}")
        assert 200 <= reply.status < 300 or reply.status == 405, reply


def delete_blob(pick: str) -> Step:
    async def run(s: Suite, st: PushState) -> None:
        blob = s.data.layer if pick == "layer" else s.data.configs[1]
        reply = await send(s.client, "DELETE", f"/v2/{s.name}/blobs/{blob.digest}")
        assert 200 <= reply.status < 300 or reply.status in (404, 405), reply

    title = (
        "Delete layer blob created in setup"
        if pick == "layer"
        else "Delete config blob created in tests"
    )
    return title, run


CHECKS: list[Check[PushState]] = numbered(
    "U",
    [
        ("PATCH request with blob in body should yield 202 response", streamed_patch),
        ("PUT request to session URL with digest should yield 201 response", streamed_put),
        ("GET nonexistent blob should result in 404 response", get_nonexistent_blob),
        ("POST request with digest and blob should yield a 201 or 202", post_with_digest),
        (
            "GET request to blob URL from prior request should yield 200 or 404 based on "
            "response code",
            get_after_post,
        ),
        ("POST request should yield a session ID", post_session),
        ("PUT upload of a blob should yield a 201 Response", monolithic_put),
        get_existing("blob"),
        ("PUT upload of a layer blob should yield a 201 Response", monolithic_layer),
        get_existing("layer"),
        ("Out-of-order blob upload should return 416", out_of_order),
        ("PATCH request with first chunk should return 202", first_chunk),
        ("Retry previous blob chunk should return 416", retry_chunk),
        (
            "Get on stale blob upload should return 204 with a range and location",
            stale_status,
        ),
        ("PATCH request with second chunk should return 202", second_chunk),
        ("PUT request with digest should return 201", chunked_put),
        (
            "Cross-mounting of a blob without the from argument should yield session id",
            mount_without_from,
        ),
        (
            "POST request to mount another repository's blob should return 201 or 202",
            mount_from,
        ),
        (
            "GET request to test digest within cross-mount namespace should return 200",
            get_mounted,
        ),
        ("Cross-mounting of nonexistent blob should yield session id", mount_fell_back),
        (
            "Cross-mounting without from, and automatic content discovery enabled should "
            "return a 201",
            automatic_crossmount,
        ),
        (
            "Cross-mounting without from, and automatic content discovery disabled should "
            "return a 202",
            automatic_crossmount,
        ),
        ("GET nonexistent manifest should return 404", get_nonexistent_manifest),
        ("PUT should accept a manifest upload", put_tags),
        ("Registry should accept a manifest upload with no layers", put_no_layers),
        ("GET request to manifest URL (digest) should yield 200 response", get_by_digest),
        ("Delete manifest created in tests", delete_manifests),
        delete_blob("config"),
        delete_blob("layer"),
    ],
)
assert len(CHECKS) == 29


@pytest.mark.parametrize("check_id", [c.id for c in CHECKS])
async def test_push(registry: RegistryClient, check_id: str) -> None:
    await run_one(Suite(registry), PushState(), CHECKS, check_id)
