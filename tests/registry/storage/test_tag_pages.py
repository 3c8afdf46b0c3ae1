"""Rendered tag-list pages (``Tags.rendered_page``): made once per listing stamp, made
afresh once a tag is added or removed (here or by another process sharing the store),
never remembered without a stamp, and bounded whatever pages clients ask for."""

from __future__ import annotations

import os
import time
from pathlib import Path

from registry.oci.digest import digest_of
from registry.storage.driver.base import StorageDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.registry import Registry
from registry.storage.tags import MAX_REMEMBERED_PAGE, MAX_REMEMBERED_PAGES

MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,'
    b'"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},'
    b'"layers":[]}'
)

Page = tuple[str, tuple[str, ...], bool]


class Renderer:
    """Records each page it is asked to render."""

    def __init__(self) -> None:
        self.rendered: list[Page] = []

    def __call__(self, name: str, tags: list[str], more: bool) -> Page:
        page = (name, tuple(tags), more)
        self.rendered.append(page)
        return page


async def tagged(driver: StorageDriver, tags: list[str]) -> Registry:
    registry = Registry(driver)
    repository = registry.repository("app")
    await registry.blob_store.put(digest_of(b"{}"), b"{}")
    await repository.blobs.link(digest_of(b"{}"))
    for tag in tags:
        await repository.manifests.put(tag, MANIFEST, None)
    return registry


def set_back(root: Path, seconds: float) -> None:
    """Age the tags directory's time past the 2 s a stamp must be old to be trusted."""
    directory = root / "docker/registry/v2/repositories/app/_manifests/tags"
    when = time.time_ns() - int(seconds * 1e9)
    os.utime(directory, ns=(when, when))


async def test_a_page_is_rendered_once_per_listing_stamp(tmp_path: Path) -> None:
    registry = await tagged(FilesystemDriver(tmp_path, fsync=False), ["a", "b", "c"])
    # A second view of the same storage: another process's, which tags meanwhile.
    other = Registry(FilesystemDriver(tmp_path, fsync=False))
    tags = registry.repository("app").tags
    render = Renderer()
    try:
        set_back(tmp_path, 3600)
        for _ in range(3):
            assert await tags.rendered_page(2, None, render) == ("app", ("a", "b"), True)
            assert await tags.rendered_page(2, "b", render) == ("app", ("c",), False)
            assert await tags.rendered_page(None, None, render) == ("app", ("a", "b", "c"), False)
        assert len(render.rendered) == 3
        # Another renderer's pages are its own: it is called, not handed the first's.
        another = Renderer()
        assert await tags.rendered_page(2, None, another) == ("app", ("a", "b"), True)
        assert len(another.rendered) == 1
        assert len(render.rendered) == 3

        await other.repository("app").manifests.put("b2", MANIFEST, None)
        # A new tag shows at once, stamp or not (a stamp under 2 s old is not trusted).
        # The directory's time is set ahead, which is not trusted either, so that a
        # stall of 2 s on a loaded machine cannot make these two calls' stamp trusted.
        set_back(tmp_path, -3600)
        assert await tags.rendered_page(2, "b", render) == ("app", ("b2", "c"), False)
        assert await tags.rendered_page(2, "b", render) == ("app", ("b2", "c"), False)
        assert len(render.rendered) == 5
        set_back(tmp_path, 1800)  # old again, another time: the stamp has changed
        assert await tags.rendered_page(2, "b", render) == ("app", ("b2", "c"), False)
        assert await tags.rendered_page(2, "b", render) == ("app", ("b2", "c"), False)
        assert len(render.rendered) == 6

        await other.repository("app").tags.untag("a")
        set_back(tmp_path, 900)
        assert await tags.rendered_page(2, None, render) == ("app", ("b", "b2"), True)
        assert len(render.rendered) == 7
    finally:
        await registry.close()
        await other.close()


async def test_pages_without_a_stamp_are_rendered_every_time() -> None:
    """The in-memory driver, as S3, has no listing stamp: every request lists."""
    registry = await tagged(InMemoryDriver(), ["a", "b"])
    render = Renderer()
    try:
        for _ in range(3):
            assert await registry.repository("app").tags.rendered_page(1, None, render) == (
                "app",
                ("a",),
                True,
            )
        assert len(render.rendered) == 3
    finally:
        await registry.close()


async def test_remembered_pages_are_bounded(tmp_path: Path) -> None:
    registry = await tagged(FilesystemDriver(tmp_path, fsync=False), ["a", "b"])
    tags = registry.repository("app").tags
    render = Renderer()
    try:
        set_back(tmp_path, 3600)
        for last in range(MAX_REMEMBERED_PAGES + 10):  # pages of clients' choosing
            await tags.rendered_page(1, f"x{last}", render)
        assert 0 < len(tags.cache._pages) <= MAX_REMEMBERED_PAGES
        # Pages too large, or after too long a ``last``, are rendered every time.
        many = await tagged(
            FilesystemDriver(tmp_path / "many", fsync=False),
            [f"t{i:03d}" for i in range(MAX_REMEMBERED_PAGE + 1)],
        )
        try:
            set_back(tmp_path / "many", 3600)
            large = Renderer()
            for _ in range(2):
                await many.repository("app").tags.rendered_page(None, None, large)
                await many.repository("app").tags.rendered_page(1, "z" * 300, large)
            assert len(large.rendered) == 4
        finally:
            await many.close()
    finally:
        await registry.close()
