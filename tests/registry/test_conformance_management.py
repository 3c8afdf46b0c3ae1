"""The OCI conformance suite's Content Management workflow (04_management_test.go),
checks M1-M10 of CONFORMANCE.md: deleting a tag, a manifest and blobs."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from tests.registry.helpers import (
    Body,
    Check,
    RegistryClient,
    Reply,
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


@dataclass
class ManagementState:
    tag_to_delete: str = ""
    num_tags: int = 0
    blob_delete_allowed: bool = True


Step = tuple[str, Body[ManagementState]]


def strict_tags(reply: Reply) -> list[str]:
    """The suite unmarshals these bodies with an error check: they must parse."""
    body = json.loads(reply.body)
    assert isinstance(body, dict), reply
    return list(body.get("tags") or [])


def populate(pick: str) -> Step:
    async def run(s: Suite, st: ManagementState) -> None:
        blob = s.data.layer if pick == "layer" else s.data.configs[3]
        assert_2xx(await push_blob(s.client, s.name, blob))

    return f"Populate registry with test {pick}", run


async def populate_tag(s: Suite, st: ManagementState) -> None:
    st.tag_to_delete = "tagtest0"
    assert_2xx(await put_manifest(s.client, s.name, st.tag_to_delete, s.data.manifests[3].data))


async def count_tags(s: Suite, st: ManagementState) -> None:
    reply = await send(s.client, "GET", f"/v2/{s.name}/tags/list")
    assert reply.status == 200, reply
    st.num_tags = len(strict_tags(reply))


async def delete_tag(s: Suite, st: ManagementState) -> None:
    reply = await send(s.client, "DELETE", f"/v2/{s.name}/manifests/{st.tag_to_delete}")
    assert reply.status in (400, 202, 405), reply
    if reply.status == 400:
        assert error_codes(reply)[0] == "UNSUPPORTED", reply


async def delete_manifest(s: Suite, st: ManagementState) -> None:
    digest = s.data.manifests[3].digest
    reply = await send(s.client, "DELETE", f"/v2/{s.name}/manifests/{digest}")
    assert reply.status in (202, 404), reply


async def get_deleted_manifest(s: Suite, st: ManagementState) -> None:
    digest = s.data.manifests[3].digest
    reply = await send(s.client, "GET", f"/v2/{s.name}/manifests/{digest}")
    assert reply.status in (404, 200), reply


async def tags_reflect_deletion(s: Suite, st: ManagementState) -> None:
    reply = await send(s.client, "GET", f"/v2/{s.name}/tags/list")
    assert reply.status == 200, reply
    assert len(strict_tags(reply)) < st.num_tags, reply


async def delete_blobs(s: Suite, st: ManagementState) -> None:
    for blob in (s.data.configs[3], s.data.layer):
        reply = await send(s.client, "DELETE", f"/v2/{s.name}/blobs/{blob.digest}")
        assert reply.status in (202, 404, 405), reply
    # Only the layer's answer decides whether blob deletion is disallowed, as in the suite.
    if reply.status == 405:
        st.blob_delete_allowed = False


async def get_deleted_blob(s: Suite, st: ManagementState) -> None:
    if not st.blob_delete_allowed:
        raise Skipped("blob deletion is disallowed (405)")
    reply = await send(s.client, "GET", f"/v2/{s.name}/blobs/{s.data.configs[3].digest}")
    assert reply.status == 404, reply


CHECKS: list[Check[ManagementState]] = numbered(
    "M",
    [
        populate("config blob"),
        populate("layer"),
        ("Populate registry with test tag", populate_tag),
        ("Check how many tags there are before anything gets deleted", count_tags),
        (
            "DELETE request to manifest tag should return 202, unless tag deletion is "
            "disallowed (400/405)",
            delete_tag,
        ),
        (
            "DELETE request to manifest (digest) should yield 202 response unless already deleted",
            delete_manifest,
        ),
        (
            "GET request to deleted manifest URL should yield 404 response, unless delete is "
            "disallowed",
            get_deleted_manifest,
        ),
        ("GET request to tags list should reflect manifest deletion", tags_reflect_deletion),
        ("DELETE request to blob URL should yield 202 response", delete_blobs),
        ("GET request to deleted blob URL should yield 404 response", get_deleted_blob),
    ],
)
assert len(CHECKS) == 10


@pytest.mark.parametrize("check_id", [c.id for c in CHECKS])
async def test_management(registry: RegistryClient, check_id: str) -> None:
    await run_one(Suite(registry), ManagementState(), CHECKS, check_id)
