"""The OCI conformance suite's Content Discovery workflow (03_discovery_test.go), checks
D1-D16 of CONFORMANCE.md: tag listing with ``n``/``last``, the referrers API with
``subject`` artifacts (pushed before and after their subject), filters, teardown."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.registry.helpers import (
    EMPTY_JSON_DIGEST,
    REF_TYPE_A,
    Blob,
    Body,
    Check,
    RegistryClient,
    Reply,
    Skipped,
    Suite,
    assert_2xx,
    numbered,
    push_blob,
    put_manifest,
    run_one,
    send,
)
from tests.support.oci import OCI_INDEX, OCI_MANIFEST

ANNOTATION = "org.opencontainers.conformance.test"


@dataclass
class DiscoveryState:
    tags: list[str] = field(default_factory=list)
    num_tags: int = 4


Step = tuple[str, Body[DiscoveryState]]


def tag_list(reply: Reply) -> list[str]:
    """getTagList: the ``tags`` of a body, or nothing when it does not parse."""
    try:
        tags = json.loads(reply.body).get("tags") or []
    except (ValueError, AttributeError):
        return []
    return [str(t) for t in tags]


# ------------------------------------------------------------- Setup


def populate(pick: str) -> Step:
    async def run(s: Suite, st: DiscoveryState) -> None:
        blob = s.data.layer if pick == "layer" else s.data.configs[2]
        assert_2xx(await push_blob(s.client, s.name, blob))

    return f"Populate registry with test {pick}", run


async def populate_tags(s: Suite, st: DiscoveryState) -> None:
    for i in range(st.num_tags):
        st.tags.append(f"test{i}")
        reply = await put_manifest(s.client, s.name, f"test{i}", s.data.manifests[2].data)
        assert_2xx(reply)
    st.tags = tag_list(await send(s.client, "GET", f"/v2/{s.name}/tags/list"))


async def tags_from_environment(s: Suite, st: DiscoveryState) -> None:
    raise Skipped("runs only when OCI_TAG_LIST replaces the setup")


async def references_setup(s: Suite, st: DiscoveryState) -> None:
    d = s.data
    assert d.empty_json.digest == EMPTY_JSON_DIGEST

    async def push(blob: Blob) -> None:
        assert_2xx(await push_blob(s.client, s.name, blob))

    async def put_ref(key: str, subject: Blob, media_type: str = OCI_MANIFEST) -> None:
        artifact = d.refs[key]
        reply = await put_manifest(s.client, s.name, artifact.digest, artifact.data, media_type)
        assert_2xx(reply)
        assert reply.headers.get("OCI-Subject") == subject.digest, reply

    # Referrers pushed before their subject exists...
    await push(d.empty_json)
    await push(d.ref_blob_a)
    await put_ref("a_config", d.manifests[4])
    await put_ref("a_layer", d.manifests[4])
    await put_ref("index", d.manifests[4], OCI_INDEX)
    # ...then the subject, tagged...
    await push(d.configs[4])
    await push(d.layer)
    assert_2xx(await put_manifest(s.client, s.name, "tagtest0", d.manifests[4].data))
    # ...then referrers pushed after it, and one whose subject never arrives.
    await push(d.ref_blob_b)
    await put_ref("b_config", d.manifests[4])
    await put_ref("b_layer", d.manifests[4])
    await put_ref("c_layer", d.manifests[3])


# ------------------------------------------------------------- listing tags


async def list_tags(s: Suite, st: DiscoveryState) -> None:
    reply = await send(s.client, "GET", f"/v2/{s.name}/tags/list")
    assert reply.status == 200, reply
    st.tags = tag_list(reply)
    st.num_tags = len(st.tags)


async def limit_n(s: Suite, st: DiscoveryState) -> None:
    n = st.num_tags // 2
    reply = await send(s.client, "GET", f"/v2/{s.name}/tags/list", params={"n": str(n)})
    assert reply.status == 200, reply
    st.tags = tag_list(reply)
    assert len(st.tags) == n, reply


async def start_at_last(s: Suite, st: DiscoveryState) -> None:
    n = st.num_tags // 2
    path = f"/v2/{s.name}/tags/list"
    st.tags = tag_list(await send(s.client, "GET", path, params={"n": str(n)}))
    last = st.tags[n - 1]
    reply = await send(s.client, "GET", path, params={"n": str(n), "last": last})
    assert reply.status == 200, reply
    # As in the suite, the assertions look at the first page (the one that set `last`).
    assert len(st.tags) <= n, st.tags
    assert last in st.tags


# ------------------------------------------------------------- listing referrers


async def referrers(s: Suite, digest: str, params: dict[str, str] | None = None) -> Reply:
    reply = await send(s.client, "GET", f"/v2/{s.name}/referrers/{digest}", params=params)
    assert reply.status == 200, reply
    assert reply.headers.get("Content-Type") == OCI_INDEX, reply
    return reply


def manifests_of(reply: Reply) -> list[dict[str, Any]]:
    index = reply.json()
    assert isinstance(index, dict), reply
    found = index.get("manifests") or []
    assert isinstance(found, list), reply
    return found


def assert_annotations(s: Suite, found: list[dict[str, Any]]) -> None:
    for entry in found:
        annotations = entry.get("annotations") or {}
        assert len(annotations) == 1, entry
        assert annotations.get(ANNOTATION) == s.data.annotations.get(entry.get("digest", "")), entry


async def referrers_unknown(s: Suite, st: DiscoveryState) -> None:
    reply = await referrers(s, s.data.dummy_digest)
    assert manifests_of(reply) == [], reply


async def referrers_all(s: Suite, st: DiscoveryState) -> None:
    reply = await referrers(s, s.data.manifests[4].digest)
    found = manifests_of(reply)
    assert len(found) == 5, reply
    assert found[0].get("digest") != found[1].get("digest"), reply
    assert_annotations(s, found)


async def referrers_filtered(s: Suite, st: DiscoveryState) -> None:
    reply = await referrers(s, s.data.manifests[4].digest, {"artifactType": REF_TYPE_A})
    found = manifests_of(reply)
    if applied := reply.headers.get("OCI-Filters-Applied"):
        assert len(found) == 2, reply
        assert applied == "artifactType", reply
    else:  # the suite accepts an unfiltered answer with a warning
        assert len(found) == 5, reply
    assert_annotations(s, found)


async def referrers_missing_subject(s: Suite, st: DiscoveryState) -> None:
    reply = await referrers(s, s.data.manifests[3].digest)
    found = manifests_of(reply)
    assert len(found) == 1, reply
    assert found[0].get("digest") == s.data.refs["c_layer"].digest, reply


# ------------------------------------------------------------- Teardown


async def delete_ok(s: Suite, kind: str, reference: str, *allowed: int) -> None:
    reply = await send(s.client, "DELETE", f"/v2/{s.name}/{kind}/{reference}")
    assert 200 <= reply.status < 300 or reply.status in allowed, reply


async def delete_manifests_and_tags(s: Suite, st: DiscoveryState) -> None:
    r, m = s.data.refs, s.data.manifests
    references = [r["index"].digest, m[2].digest, m[4].digest, r["a_config"].digest]
    references += [r["a_layer"].digest, "tagtest0", r["b_config"].digest]
    references += [r["b_layer"].digest, r["c_layer"].digest]
    for reference in references:
        await delete_ok(s, "manifests", reference, 404, 405)


def delete_blob(pick: str) -> Step:
    async def run(s: Suite, st: DiscoveryState) -> None:
        blob = s.data.layer if pick == "layer" else s.data.configs[2]
        await delete_ok(s, "blobs", blob.digest, 405)

    title = (
        "Delete layer blob created in setup"
        if pick == "layer"
        else "Delete config blob created in tests"
    )
    return title, run


async def references_teardown(s: Suite, st: DiscoveryState) -> None:
    r, d = s.data.refs, s.data
    for key in ("index", "a_config", "a_layer"):
        await delete_ok(s, "manifests", r[key].digest, 404, 405)
    await delete_ok(s, "manifests", d.manifests[4].digest, 404, 405)
    for key in ("b_config", "b_layer"):
        await delete_ok(s, "manifests", r[key].digest, 404, 405)
    for blob in (d.configs[4], d.ref_blob_a, d.ref_blob_b, d.empty_json):
        await delete_ok(s, "blobs", blob.digest, 404, 405)


CHECKS: list[Check[DiscoveryState]] = numbered(
    "D",
    [
        populate("blob"),
        populate("layer"),
        ("Populate registry with test tags", populate_tags),
        ("Populate registry with test tags (no push)", tags_from_environment),
        ("References setup", references_setup),
        ("GET request to list tags should yield 200 response", list_tags),
        ("GET number of tags should be limitable by `n` query parameter", limit_n),
        ("GET start of tag is set by `last` query parameter", start_at_last),
        (
            "GET request to nonexistent blob should result in empty 200 response",
            referrers_unknown,
        ),
        ("GET request to existing blob should yield 200", referrers_all),
        ("GET request to existing blob with filter should yield 200", referrers_filtered),
        ("GET request to missing manifest should yield 200", referrers_missing_subject),
        ("Delete created manifest & associated tags", delete_manifests_and_tags),
        delete_blob("config"),
        delete_blob("layer"),
        ("References teardown", references_teardown),
    ],
)
assert len(CHECKS) == 16


@pytest.mark.parametrize("check_id", [c.id for c in CHECKS])
async def test_discovery(registry: RegistryClient, check_id: str) -> None:
    await run_one(Suite(registry), DiscoveryState(), CHECKS, check_id)
