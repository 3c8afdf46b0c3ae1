"""Tag and catalog listings: lexical order, ``n``/``last`` pages and ``Link`` headers."""

from __future__ import annotations

import re
from pathlib import Path

from yarl import URL

from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob
from tests.support.oci import make_image

# Names whose naive directory walk order differs from their lexical order.
TRICKY_NAMES = ["a", "a-b", "a.c", "a/b", "a/b/c", "a/b-c", "a__z", "b", "zz/top"]


async def create_repository(client: RegistryClient, name: str) -> None:
    blob = Blob(name.encode())
    response = await client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": blob.digest}, data=blob.data
    )
    assert response.status == 201


def next_link(link: str | None) -> str | None:
    if link is None:
        return None
    found = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert found, link
    url = URL(found.group(1))
    return str(url.relative()) if url.absolute else found.group(1)


async def page_through(client: RegistryClient, first: str, key: str) -> list[list[str]]:
    pages: list[list[str]] = []
    url: str | None = first
    while url is not None:
        response = await client.get(url)
        assert response.status == 200
        pages.append((await response.json())[key])
        url = next_link(response.headers.get("Link"))
        assert len(pages) < 50
    return pages


async def test_catalog_pages_follow_lexical_order(registry: RegistryClient) -> None:
    for name in reversed(TRICKY_NAMES):
        await create_repository(registry, name)
    whole = await registry.get("/v2/_catalog")
    assert (await whole.json())["repositories"] == sorted(TRICKY_NAMES)
    assert "Link" not in whole.headers
    pages = await page_through(registry, "/v2/_catalog?n=2", "repositories")
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert [n for p in pages for n in p] == sorted(TRICKY_NAMES)


async def test_catalog_last_starts_after_the_name(registry: RegistryClient) -> None:
    for name in TRICKY_NAMES:
        await create_repository(registry, name)
    response = await registry.get("/v2/_catalog", params={"last": "a/b", "n": "3"})
    assert (await response.json())["repositories"] == ["a/b-c", "a/b/c", "a__z"]


async def test_a_directory_link_loop_in_the_store_ends_the_walk(
    registry: RegistryClient, tmp_path: Path
) -> None:
    """A link an operator left under the repositories that points back up (a loop)
    made the walk descend until the OS refused the path: a 500. No name is longer than
    the grammar's 255 characters, so the walk stops there."""
    await create_repository(registry, "real/app")
    repositories = tmp_path / "registry-data/docker/registry/v2/repositories"
    (repositories / "real/loop").symlink_to("..")
    response = await registry.get("/v2/_catalog")
    assert response.status == 200
    names = (await response.json())["repositories"]
    assert "real/app" in names
    assert all(len(name) <= 255 for name in names)


async def test_catalog_bounds_n_and_rejects_garbage(registry: RegistryClient) -> None:
    await create_repository(registry, "one")
    largest = await registry.get("/v2/_catalog", params={"n": "1000"})
    assert (await largest.json())["repositories"] == ["one"]
    for bad in ("-1", "ten", "1e3", "1001", "100000000"):
        response = await registry.get("/v2/_catalog", params={"n": bad})
        assert response.status == 400
        assert (await response.json())["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


async def test_tags_paginate_with_link_headers(registry: RegistryClient) -> None:
    image = make_image(layer_count=1, layer_size=1024)
    for digest, content in image.blobs.items():
        await registry.post("/v2/app/blobs/uploads/", params={"digest": digest}, data=content)
    tags = [f"v{i:02d}" for i in range(25)] + ["latest", "Stable"]
    for tag in tags:
        response = await registry.put(
            f"/v2/app/manifests/{tag}",
            data=image.manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert response.status == 201
    pages = await page_through(registry, "/v2/app/tags/list?n=10", "tags")
    assert [len(p) for p in pages] == [10, 10, 7]
    assert [t for p in pages for t in p] == sorted(tags)
    after = await registry.get("/v2/app/tags/list", params={"last": "v20"})
    assert (await after.json())["tags"] == ["v21", "v22", "v23", "v24"]
    empty = await registry.get("/v2/app/tags/list", params={"n": "0"})
    assert (await empty.json())["tags"] == []


async def test_tags_of_an_unknown_repository_are_name_unknown(registry: RegistryClient) -> None:
    response = await registry.get("/v2/nobody/here/tags/list")
    assert response.status == 404
    assert (await response.json())["errors"][0]["code"] == "NAME_UNKNOWN"


async def test_tag_lists_stay_current_across_instances(make_registry: ClientFactory) -> None:
    """Tag lists are cached per process by the tags directory's mtime: a tag another
    instance adds or deletes must show at once."""
    first, second = await make_registry(), await make_registry()  # one storage, two caches
    image = make_image(layer_count=1, layer_size=1024, seed="cache")
    for digest, content in image.blobs.items():
        await first.post("/v2/app/blobs/uploads/", params={"digest": digest}, data=content)

    async def push(client: RegistryClient, tag: str) -> None:
        response = await client.put(
            f"/v2/app/manifests/{tag}",
            data=image.manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert response.status == 201

    async def tags(client: RegistryClient) -> list[str]:
        return list((await (await client.get("/v2/app/tags/list")).json())["tags"])

    await push(first, "a")
    assert await tags(first) == ["a"]
    await push(second, "b")
    assert await tags(first) == ["a", "b"]
    assert (await second.delete("/v2/app/manifests/a")).status == 202
    assert await tags(first) == ["b"]
