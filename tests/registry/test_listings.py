"""Tag and catalog listings: lexical order, ``n``/``last`` pages and ``Link`` headers."""

from __future__ import annotations

import os
import re
import time
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
    # A superscript two and an Arabic-Indic one are digits to str.isdigit(), not to
    # Distribution (nor to int(): the superscript was a 500), on both listings.
    for bad in ("-1", "ten", "1e3", "1001", "100000000", "\u00b2", "\u0661"):
        for path in ("/v2/_catalog", "/v2/one/tags/list"):
            response = await registry.get(path, params={"n": bad})
            if path.endswith("tags/list") and bad in ("1001", "100000000"):
                assert response.status == 200, (path, bad)  # a tag page has no bound
                continue
            assert response.status == 400, (path, bad)
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


class TaggingClient:
    """Pushes one small image's manifest under tags of ``app`` and lists them."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.image = make_image(layer_count=1, layer_size=1024, seed="cache")

    async def upload_blobs(self) -> None:
        for digest, content in self.image.blobs.items():
            response = await self.client.post(
                "/v2/app/blobs/uploads/", params={"digest": digest}, data=content
            )
            assert response.status == 201

    async def push(self, tag: str) -> None:
        response = await self.client.put(
            f"/v2/app/manifests/{tag}",
            data=self.image.manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert response.status == 201

    async def tags(self) -> list[str]:
        return list((await (await self.client.get("/v2/app/tags/list")).json())["tags"])


def tags_directory(registry_environ: dict[str, str]) -> Path:
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    return root / "docker/registry/v2/repositories/app/_manifests/tags"


def set_back(directory: Path, seconds: float) -> None:
    """Make ``directory``'s modification time ``seconds`` old: a listing of it is then
    cached (a recent time is not vouched for, see FilesystemDriver.listing_stamp)."""
    when = time.time_ns() - int(seconds * 1e9)
    os.utime(directory, ns=(when, when))


async def test_tag_lists_stay_current_across_instances(make_registry: ClientFactory) -> None:
    """Tag lists are cached per process by the tags directory's stamp: a tag another
    instance adds or deletes must show at once."""
    # One storage, two caches: as two workers, or two instances on one volume.
    first, second = TaggingClient(await make_registry()), TaggingClient(await make_registry())
    await first.upload_blobs()
    await first.push("a")
    assert await first.tags() == ["a"]
    await second.push("b")
    assert await first.tags() == ["a", "b"]
    assert (await second.client.delete("/v2/app/manifests/a")).status == 202
    assert await first.tags() == ["b"]


async def test_a_cached_tag_list_is_read_again_once_another_instance_tags(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    """The cached path itself (an old directory time): a tag pushed or deleted through
    another instance changes the stamp, and the next listing shows it."""
    first, second = TaggingClient(await make_registry()), TaggingClient(await make_registry())
    await first.upload_blobs()
    await first.push("a")
    for round_ in range(3):
        set_back(tags_directory(registry_environ), 3600)
        assert await first.tags() == ["a"]
        assert await first.tags() == ["a"]  # from the cache
        await second.push(f"b{round_}")
        # Old again, so the listing could be trusted, but another time than the cached
        # one: only the stamp's change can make the next listing show the new tag.
        set_back(tags_directory(registry_environ), 1800)
        assert await first.tags() == ["a", f"b{round_}"]
        assert await first.tags() == ["a", f"b{round_}"]  # from the cache
        assert (await second.client.delete(f"/v2/app/manifests/b{round_}")).status == 202
        set_back(tags_directory(registry_environ), 900)
        assert await first.tags() == ["a"]


async def test_a_tag_added_within_the_same_clock_tick_is_listed(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    """The kernel stamps a directory's time from a clock that ticks every few ms: a tag
    added in the tick of the previous change leaves the time unchanged. A listing read
    while the time is that recent must not be trusted later, or the new tag would never
    show."""
    first, second = TaggingClient(await make_registry()), TaggingClient(await make_registry())
    directory = tags_directory(registry_environ)
    await first.upload_blobs()
    await first.push("a")
    # A time too recent to vouch for; set in the future so that no stall of a loaded
    # test machine can age it past the guard before the listings below.
    tick = time.time_ns() + 600 * 10**9
    os.utime(directory, ns=(tick, tick))
    assert await first.tags() == ["a"]
    await second.push("b")
    os.utime(directory, ns=(tick, tick))  # "b" landed in the same tick: the time is as it was
    assert await first.tags() == ["a", "b"]
    assert (await second.client.delete("/v2/app/manifests/a")).status == 202
    os.utime(directory, ns=(tick, tick))
    assert await first.tags() == ["b"]


async def test_cached_tag_pages_and_links_are_those_of_a_fresh_listing(
    registry: RegistryClient, registry_environ: dict[str, str]
) -> None:
    """``n``/``last`` pages and their ``Link`` headers are the same whether the list
    was read from the directory or from the cache."""
    client = TaggingClient(registry)
    await client.upload_blobs()
    for tag in [f"v{i:02d}" for i in range(12)] + ["latest", "Stable", "_x"]:
        await client.push(tag)

    async def pages() -> list[tuple[int, str | None, object]]:
        seen = []
        for query in ("?n=4", "?n=4&last=v03", "?n=100", "?last=v10", "?n=0", "?last=zzz", ""):
            response = await registry.get(f"/v2/app/tags/list{query}")
            seen.append((response.status, response.headers.get("Link"), await response.json()))
        return seen

    fresh = await pages()  # the directory is new: read on every request
    set_back(tags_directory(registry_environ), 3600)
    assert await pages() == fresh  # cached from the first of these on
    assert await pages() == fresh
    assert fresh[0][1] is not None and fresh[0][1].endswith('?n=4&last=v00>; rel="next"')
    assert fresh[0][2] == {"name": "app", "tags": ["Stable", "_x", "latest", "v00"]}


async def test_a_remembered_page_links_to_the_next_on_each_request_s_own_host(
    registry: RegistryClient, registry_environ: dict[str, str]
) -> None:
    """A page's body is made once per listing stamp; its ``Link`` is each request's own,
    as it names the host the client asked."""
    client = TaggingClient(registry)
    await client.upload_blobs()
    for tag in ["a", "b", "c"]:
        await client.push(tag)
    set_back(tags_directory(registry_environ), 3600)
    for host in ["one.example:5000", "two.example", "one.example:5000"]:
        response = await registry.get("/v2/app/tags/list?n=2", headers={"Host": host})
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert await response.read() == b'{"name": "app", "tags": ["a", "b"]}'
        assert response.headers["Link"] == (
            f'<http://{host}/v2/app/tags/list?n=2&last=b>; rel="next"'
        )
