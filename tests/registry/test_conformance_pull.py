"""The OCI conformance suite's Pull workflow (01_pull_test.go), checks P1-P24 of
CONFORMANCE.md, replayed against the real registry."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.registry.helpers import (
    SPEC_CODES,
    Blob,
    Body,
    Check,
    RegistryClient,
    Skipped,
    Suite,
    assert_2xx,
    error_codes,
    numbered,
    push_blob,
    put_manifest,
    run_one,
    send,
)
from tests.support.oci import OCI_MANIFEST

ACCEPT = {"Accept": OCI_MANIFEST}
NONEXISTENT = ".INVALID_MANIFEST_NAME"


@dataclass
class PullState:
    tag: str = ""


Step = tuple[str, Body[PullState]]


def populate_blob(pick: str) -> Step:
    async def run(s: Suite, st: PullState) -> None:
        blob = s.data.layer if pick == "layer" else s.data.configs[int(pick)]
        assert_2xx(await push_blob(s.client, s.name, blob))

    title = (
        "Populate registry with test layer"
        if pick == "layer"
        else "Populate registry with test blob"
    )
    return title, run


async def populate_tagged(s: Suite, st: PullState) -> None:
    st.tag = "tagtest0"
    assert_2xx(await put_manifest(s.client, s.name, st.tag, s.data.manifests[0].data))


async def populate_by_digest(s: Suite, st: PullState) -> None:
    m = s.data.manifests[1]
    assert_2xx(await put_manifest(s.client, s.name, m.digest, m.data))


async def tag_from_environment(s: Suite, st: PullState) -> None:
    raise Skipped("runs only when OCI_TAG_NAME etc. replace the setup")


def head_or_get_blob(method: str, existing: bool) -> Step:
    async def run(s: Suite, st: PullState) -> None:
        digest = s.data.configs[0].digest if existing else s.data.dummy_digest
        reply = await send(s.client, method, f"/v2/{s.name}/blobs/{digest}")
        assert reply.status == (200 if existing else 404), reply
        if existing and method == "HEAD" and (h := reply.headers.get("Docker-Content-Digest")):
            assert h == digest, reply

    what = {
        ("HEAD", False): "HEAD request to nonexistent blob should result in 404 response",
        ("HEAD", True): "HEAD request to existing blob should yield 200",
        ("GET", False): "GET nonexistent blob should result in 404 response",
        ("GET", True): "GET request to existing blob URL should yield 200",
    }[(method, existing)]
    return what, run


def manifest_request(method: str, which: str) -> Step:
    """``which``: "none" (the invalid name), "0"/"1" (by digest) or "tag"."""

    async def run(s: Suite, st: PullState) -> None:
        if which == "none":
            reply = await send(s.client, method, f"/v2/{s.name}/manifests/{NONEXISTENT}")
            assert reply.status == 404, reply
            return
        if which == "tag":
            assert st.tag, "no tag from setup"
        expected = s.data.manifests[0 if which == "tag" else int(which)].digest
        reference = st.tag if which == "tag" else expected
        reply = await send(s.client, method, f"/v2/{s.name}/manifests/{reference}", headers=ACCEPT)
        assert reply.status == 200, reply
        if method == "HEAD" and (h := reply.headers.get("Docker-Content-Digest")):
            assert h == expected, reply

    if which == "none":
        verb = "HEAD request to" if method == "HEAD" else "GET"
        title = f"{verb} nonexistent manifest should return 404"
    else:
        path = "manifest path (tag)" if which == "tag" else f"manifest[{which}] path (digest)"
        title = f"{method} request to {path} should yield 200 response"
    return title, run


async def error_body(s: Suite, st: PullState) -> None:
    reply = await send(
        s.client,
        "GET",
        f"/v2/{s.name}/manifests/sha256:totallywrong",
        headers={"Content-Type": OCI_MANIFEST},
        body=b"blablabla",
    )
    assert reply.status in (400, 404), reply
    if reply.status == 400:
        assert error_codes(reply)[0] in SPEC_CODES, reply


def delete(kind: str, pick: str, allow_404: bool) -> Step:
    async def run(s: Suite, st: PullState) -> None:
        blob: Blob
        if kind == "manifests":
            blob = s.data.manifests[int(pick)]
        else:
            blob = s.data.layer if pick == "layer" else s.data.configs[int(pick)]
        reply = await send(s.client, "DELETE", f"/v2/{s.name}/{kind}/{blob.digest}")
        allowed = 200 <= reply.status < 300 or reply.status == 405
        assert allowed or (allow_404 and reply.status == 404), reply

    if kind == "manifests":
        title = f"Delete manifest[{pick}] created in setup"
    else:
        title = (
            "Delete layer blob created in setup"
            if pick == "layer"
            else f"Delete config[{pick}] blob created in setup"
        )
    return title, run


CHECKS: list[Check[PullState]] = numbered(
    "P",
    [
        populate_blob("0"),
        populate_blob("1"),
        populate_blob("layer"),
        ("Populate registry with test manifest", populate_tagged),
        ("Populate registry with test manifest", populate_by_digest),
        ("Get tag name from environment", tag_from_environment),
        head_or_get_blob("HEAD", False),
        head_or_get_blob("HEAD", True),
        head_or_get_blob("GET", False),
        head_or_get_blob("GET", True),
        manifest_request("HEAD", "none"),
        manifest_request("HEAD", "0"),
        manifest_request("HEAD", "1"),
        manifest_request("HEAD", "tag"),
        manifest_request("GET", "none"),
        manifest_request("GET", "0"),
        manifest_request("GET", "1"),
        manifest_request("GET", "tag"),
        ("400 response body should contain OCI-conforming JSON message", error_body),
        delete("manifests", "0", allow_404=False),
        delete("manifests", "1", allow_404=False),
        delete("blobs", "0", allow_404=True),
        delete("blobs", "1", allow_404=True),
        delete("blobs", "layer", allow_404=True),
    ],
)
assert len(CHECKS) == 24


@pytest.mark.parametrize("check_id", [c.id for c in CHECKS])
async def test_pull(registry: RegistryClient, check_id: str) -> None:
    await run_one(Suite(registry), PullState(), CHECKS, check_id)
