"""The API's limits and edges beyond the conformance suite (issue 2): repository-name
grammar and the 255-character bound, ``Location`` behind a proxy and relative URLs, tag and
catalog pagination with ``Link`` and the bound on ``n``, deletes when disabled, blob
headers and ``Range`` reads, sha512 digests, the nesting depth of a manifest."""

from __future__ import annotations

import pytest

from tests.registry.helpers import (
    Blob,
    ClientFactory,
    RegistryClient,
    assert_error,
    put_manifest,
    relative,
    send,
)
from tests.registry.test_api_errors import (
    DATA,
    GOOD,
    NAME,
    assert_serving,
    manifest,
    pushed,
    seed,
    sha512,
)


@pytest.fixture
async def seeded(registry: RegistryClient) -> RegistryClient:
    return await seed(registry)


# ------------------------------------------------------------------ names and Locations


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("/".join(["a" * 127, "b" * 127]), True),  # 255 characters
        ("/".join(["a" * 127, "b" * 128]), False),  # 256
        ("a.b_c__d-e--f/g0/h", True),
        ("Upper/case", False),
        ("a//b", False),
        ("-lead", False),
        ("trail-", False),
        ("a..b", False),
        ("a___b", False),
    ],
)
async def test_repository_names(registry: RegistryClient, name: str, valid: bool) -> None:
    reply = await send(registry, "POST", f"/v2/{name}/blobs/uploads/")
    if valid:
        assert reply.status == 202, reply
        await pushed(registry, GOOD, name)
    elif len(name) > 255:
        assert_error(reply, 400, "NAME_INVALID")
    else:
        assert_error(reply, (400, 404), "NAME_INVALID", "NAME_UNKNOWN")


async def test_locations_honour_the_forwarded_scheme_and_host(registry: RegistryClient) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"}
    for headers, base in [
        (proxied, "https://registry.example.com/v2/"),
        ({"Host": "registry.internal:5000"}, "http://registry.internal:5000/v2/"),
    ]:
        started = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/", headers=headers)
        done = await send(
            registry,
            "PUT",
            started.location,
            headers=headers,
            body=DATA,
            params={"digest": GOOD.digest},
        )
        for reply in (started, done):
            location = reply.headers.get("Location", "")
            assert location.startswith((base, "/v2/")), (headers, reply)


async def test_relative_urls(make_registry: ClientFactory) -> None:
    client = await make_registry({"REGISTRY_HTTP_RELATIVEURLS": "true"})
    started = await send(client, "POST", f"/v2/{NAME}/blobs/uploads/")
    assert started.headers.get("Location", "").startswith(f"/v2/{NAME}/blobs/uploads/"), started


# ------------------------------------------------------------------ pagination


async def follow_pages(client: RegistryClient, path: str, key: str, n: int) -> list[list[str]]:
    pages, target = [], f"{path}?n={n}"
    while target:
        reply = await send(client, "GET", target)
        assert reply.status == 200, reply
        pages.append(reply.json()[key])
        link = reply.headers.get("Link", "")
        assert not link or link.endswith('>; rel="next"'), reply
        target = relative(link[1 : link.index(">")]) if link else ""
        assert len(pages) < 20, pages
    return pages


async def test_tags_and_catalog_paginate_in_order(registry: RegistryClient) -> None:
    config = Blob(b"{}")
    for repo in ("cat/b", "cat/a", "cat/c"):
        await pushed(registry, config, repo)
        await pushed(registry, GOOD, repo)
        for tag in ("v3", "v1", "latest", "v2", "beta"):
            assert (await put_manifest(registry, repo, tag, manifest(config, GOOD))).status == 201
    tag_pages = await follow_pages(registry, "/v2/cat/a/tags/list", "tags", 2)
    assert tag_pages == [["beta", "latest"], ["v1", "v2"], ["v3"]]
    repos = [
        r for page in await follow_pages(registry, "/v2/_catalog", "repositories", 2) for r in page
    ]
    assert repos == sorted(repos) and {"cat/a", "cat/b", "cat/c"} <= set(repos)
    after = await send(registry, "GET", "/v2/cat/a/tags/list", params={"n": "2", "last": "v1"})
    assert after.json()["tags"] == ["v2", "v3"], after


@pytest.mark.parametrize("n", ["abc", "-1", "1000000"])
async def test_bad_page_sizes(seeded: RegistryClient, n: str) -> None:
    catalog = await send(seeded, "GET", "/v2/_catalog", params={"n": n})
    assert_error(catalog, 400, "PAGINATION_NUMBER_INVALID")
    if n != "1000000":  # a big n on tags may be clamped instead (the spec allows fewer)
        tags = await send(seeded, "GET", f"/v2/{NAME}/tags/list", params={"n": n})
        assert_error(tags, 400, "PAGINATION_NUMBER_INVALID")


# ------------------------------------------------------------------ blobs: delete, Range, sha512


async def test_deletes_are_unsupported_when_disabled(make_registry: ClientFactory) -> None:
    client = await make_registry({"REGISTRY_STORAGE_DELETE_ENABLED": "false"})
    config = Blob(b"{}")
    await pushed(client, GOOD)
    await pushed(client, config)
    put = await put_manifest(client, NAME, "v1", manifest(config, GOOD))
    digest = put.headers["Docker-Content-Digest"]
    for path in (f"blobs/{GOOD.digest}", f"manifests/{digest}", "manifests/v1"):
        assert_error(await send(client, "DELETE", f"/v2/{NAME}/{path}"), 405, "UNSUPPORTED")
    assert (await send(client, "GET", f"/v2/{NAME}/blobs/{GOOD.digest}")).body == DATA
    assert (await send(client, "GET", f"/v2/{NAME}/manifests/v1")).status == 200


async def test_blob_headers_and_ranges(seeded: RegistryClient) -> None:
    path, size = f"/v2/{NAME}/blobs/{GOOD.digest}", len(DATA)
    head = await send(seeded, "HEAD", path)
    assert head.status == 200 and head.headers.get("Content-Length") == str(size), head
    assert head.headers.get("Docker-Content-Digest") == GOOD.digest, head
    assert head.headers.get("Content-Type") and head.headers.get("ETag"), head
    assert head.headers.get("Accept-Ranges") == "bytes", head
    for spec, start, end in [("bytes=2-5", 2, 5), ("bytes=-4", size - 4, size - 1)]:
        part = await send(seeded, "GET", path, headers={"Range": spec})
        assert part.status == 206 and part.body == DATA[start : end + 1], part
        assert part.headers.get("Content-Range") == f"bytes {start}-{end}/{size}", part
    beyond = await send(seeded, "GET", path, headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status == 416, beyond
    assert beyond.headers.get("Content-Range") == f"bytes */{size}", beyond


BIG = 10**20  # beyond any blob, and beyond a 64-bit integer

# Every form of Range a client may send, and what each is answered: (first, last) byte of
# a 206, None for a 416. "end" is the blob's last byte. The registry reads the header
# itself (not through aiohttp's request.http_range); these pin the answers it gave before.
RANGE_FORMS: list[tuple[str, tuple[int, int | str] | None]] = [
    ("bytes=0-0", (0, 0)),
    ("BYTES=2-5", (2, 5)),  # the unit is case-insensitive
    ("bytes=3-", (3, "end")),
    (f"bytes=1-{BIG}", (1, "end")),  # clipped to the blob
    (f"bytes=-{BIG}", (0, "end")),  # a suffix longer than the blob: all of it
    ("bytes=-0", (0, "end")),  # read as "0-", as aiohttp reads it
    ("bytes=5-2", None),
    ("bytes=-", None),
    ("bytes=", None),
    ("items=1-2", None),
    ("bytes=0-1,4-5", None),  # several ranges: not served
    ("bytes= 1-2", None),
    ("bytes=1-2-3", None),
    ("bytes=SIZE-", None),  # starts past the end
    # Positions longer than int() reads (4,300 digits) were a 500: beyond any blob.
    ("bytes=0-" + "9" * 5000, (0, "end")),
    ("bytes=-" + "9" * 5000, (0, "end")),
    ("bytes=" + "9" * 5000 + "-", None),
    ("bytes=" + "9" * 5000 + "-" + "9" * 5001, None),
]


@pytest.mark.parametrize(("spec", "expected"), RANGE_FORMS)
async def test_every_range_form(
    seeded: RegistryClient, spec: str, expected: tuple[int, int | str] | None
) -> None:
    path, size = f"/v2/{NAME}/blobs/{GOOD.digest}", len(DATA)
    answer = await send(seeded, "GET", path, headers={"Range": spec.replace("SIZE", str(size))})
    if expected is None:
        assert answer.status == 416, answer
        assert answer.headers.get("Content-Range") == f"bytes */{size}", answer
        return
    start, end = expected[0], size - 1 if expected[1] == "end" else int(expected[1])
    assert answer.status == 206 and answer.body == DATA[start : end + 1], answer
    assert answer.headers.get("Content-Range") == f"bytes {start}-{end}/{size}", answer


async def test_sha512_digests(registry: RegistryClient) -> None:
    digest = sha512(DATA)
    started = await send(registry, "POST", f"/v2/{NAME}/blobs/uploads/")
    done = await send(registry, "PUT", started.location, body=DATA, params={"digest": digest})
    assert done.status == 201 and done.headers.get("Docker-Content-Digest") in (digest, GOOD.digest)
    head = await send(registry, "HEAD", f"/v2/{NAME}/blobs/{digest}")
    assert head.status == 200 and head.headers.get("Content-Length") == str(len(DATA)), head
    assert (await send(registry, "GET", f"/v2/{NAME}/blobs/{digest}")).body == DATA
    other = DATA[::-1]
    post = await send(
        registry, "POST", f"/v2/{NAME}/blobs/uploads/?digest={sha512(other)}", body=other
    )
    assert post.status == 201, post
    wrong = await send(
        registry, "POST", f"/v2/{NAME}/blobs/uploads/?digest={sha512(b'x')}", body=DATA
    )
    assert_error(wrong, 400, "DIGEST_INVALID")
    assert (await send(registry, "HEAD", f"/v2/{NAME}/blobs/{sha512(b'x')}")).status == 404


@pytest.mark.parametrize(
    "deep",
    [
        b"[" * 5000 + b"]" * 5000,  # an array 5,000 levels deep in an unknown field
        b'{"a":' * 5000 + b"{}" + b"}" * 5000,  # objects
        b"[" * 5000,  # never closed: the decoder would still descend into every level
    ],
)
async def test_a_manifest_nested_too_deep_is_invalid(seeded: RegistryClient, deep: bytes) -> None:
    body = manifest(Blob(b"{}"), GOOD)
    body = body[:-1] + b', "x-deep": ' + deep + b"}"
    reply = await put_manifest(seeded, NAME, "deep", body)
    assert_error(reply, 400, "MANIFEST_INVALID")
    assert "nested" in reply.json()["errors"][0]["message"], reply
    assert (await send(seeded, "GET", f"/v2/{NAME}/manifests/deep")).status == 404
    await assert_serving(seeded)


async def test_a_manifest_nested_within_the_bound_is_kept(seeded: RegistryClient) -> None:
    # 100 levels in all (the document itself is the first): the bound, not below it.
    deep = '"quoted [[[ brackets \\" do not count"'.join(["[" * 98, "]" * 98])
    body = manifest(Blob(b"{}"), GOOD)[:-1] + b', "x-deep": {"a": ' + deep.encode() + b"}}"
    reply = await put_manifest(seeded, NAME, "deep", body)
    assert reply.status == 201, reply
    assert (await send(seeded, "GET", f"/v2/{NAME}/manifests/deep")).body == body
