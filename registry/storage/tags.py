"""Tags: a mutable name → manifest digest map per repository, Distribution's layout."""

from __future__ import annotations

import bisect
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage import paths
from registry.storage.driver.base import DriverError, PathNotFound, StorageDriver
from registry.storage.driver.steps import Put, Step
from registry.storage.errors import ManifestUnknown, NameUnknown
from registry.storage.links import digest_tree
from registry.storage.locks import KeyedLocks

Rendered = TypeVar("Rendered")
# What a caller makes of a page (the repository's name, the page's tags, whether more
# follow): the tag list's response body, say. Kept per listing stamp by TagListCache.
PageRenderer = Callable[[str, list[str], bool], Rendered]

# Rendered pages kept per process: only pages of at most MAX_REMEMBERED_PAGE tags after a
# ``last`` of at most MAX_REMEMBERED_LAST characters (a tag has at most 128), so at most
# about 256 x 100 x 130 bytes of bodies, whatever clients ask for.
MAX_REMEMBERED_PAGES = 256
MAX_REMEMBERED_PAGE = 100
MAX_REMEMBERED_LAST = 256


class TagListCache:
    """Sorted tag lists by repository, each valid while its tags directory's listing stamp
    (:meth:`StorageDriver.listing_stamp`) is unchanged: adding or removing a tag changes
    it, in this process or any other sharing the storage. A page of a repository with
    10,000 tags then costs one ``stat`` and a slice instead of listing and sorting the
    directory. Backends without stamps (S3) are listed on every request."""

    def __init__(self, capacity: int = 1024) -> None:
        self._entries: OrderedDict[str, tuple[Hashable, list[str]]] = OrderedDict()
        self._capacity = capacity
        # Pages as callers rendered them, by (name, stamp, limit, last, renderer): a repeat
        # of a page costs the stamp's ``stat`` and one lookup, no slicing or encoding. A
        # new stamp (a tag added or removed, here or in another process) is another key,
        # so a page never outlives the listing it was made from; the old ones are dropped
        # with the rest when the pages are full.
        self._pages: dict[Hashable, object] = {}
        self._page_capacity = MAX_REMEMBERED_PAGES if capacity else 0

    def get(self, name: str, stamp: Hashable) -> list[str] | None:
        entry = self._entries.get(name)
        if entry is None or entry[0] != stamp:
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, name: str, stamp: Hashable, tags: list[str]) -> None:
        self._entries[name] = (stamp, tags)
        self._entries.move_to_end(name)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)

    def page(
        self,
        name: str,
        stamp: Hashable,
        tags: list[str],
        limit: int | None,
        last: str | None,
        render: PageRenderer[Rendered],
    ) -> Rendered:
        """``render`` of the page of ``tags`` (``name``'s listing at ``stamp``) that
        ``limit`` and ``last`` select, made once per stamp."""
        key = (name, stamp, limit, last, render)
        found = self._pages.get(key)
        if found is not None:
            # The key holds the renderer, so what it returned before is its type.
            return cast(Rendered, found)
        page, more = page_of(tags, limit, last)
        rendered = render(name, page, more)
        if (
            self._page_capacity
            and len(page) <= MAX_REMEMBERED_PAGE
            and len(last or "") <= MAX_REMEMBERED_LAST
        ):
            if len(self._pages) >= self._page_capacity:
                # Cleared when full, not kept in order of use: no bookkeeping per request,
                # and stale stamps' pages go too.
                self._pages.clear()
            self._pages[key] = rendered
        return rendered


def page_of(tags: list[str], limit: int | None, last: str | None) -> tuple[list[str], bool]:
    """Up to ``limit`` of the sorted ``tags`` after ``last``, and whether more remain."""
    start = bisect.bisect_right(tags, last) if last else 0
    if limit is None:
        return tags[start:], False
    return tags[start : start + limit], start + limit < len(tags)


@dataclass(slots=True)
class TagWrite:
    """The steps of a tag's write (``Tags.tagging``) and whether a caller took them."""

    steps: list[Step]
    started: bool = False

    def start(self) -> list[Step]:
        """The steps, to run now: from here on a failure undoes them."""
        self.started = True
        return self.steps


class Tags:
    def __init__(
        self,
        name: str,
        driver: StorageDriver,
        cache: TagListCache | None = None,
        locks: KeyedLocks | None = None,
    ) -> None:
        self.name = name
        self.driver = driver
        self.cache = cache or TagListCache(capacity=0)
        # One change of a tag at a time in this process: what a failed request undoes is
        # then only what it wrote, never what a concurrent request acknowledged meanwhile.
        self._locks = locks if locks is not None else KeyedLocks()

    async def resolve(self, tag: str) -> Digest:
        try:
            link = await self.driver.get_content(paths.tag_current_link(self.name, tag))
            return parse_digest(link.decode().strip())
        except (PathNotFound, InvalidDigest, UnicodeDecodeError):
            raise ManifestUnknown(tag) from None

    async def tag(self, tag: str, digest: Digest) -> None:
        """Point ``tag`` at ``digest``; on failure (a full disk) nothing of it is left: a
        new tag's directory would otherwise be listed while it resolves to nothing."""
        async with self.tagging(tag, digest) as write:
            await self.driver.run_steps(write.start())

    @contextlib.asynccontextmanager
    async def tagging(self, tag: str, digest: Digest) -> AsyncIterator[TagWrite]:
        """``tag`` as steps (``StorageDriver.run_steps``), for a caller that runs them
        with writes of its own in one go (a manifest PUT: its revision link first). The
        caller takes the steps (``TagWrite.start``) and runs them inside the block, which
        holds the tag's lock; an error raised out of it once they were taken undoes what
        they may have left, as ``tag`` does. An error before that undoes nothing: the
        tag as it is may be another process's, acknowledged meanwhile."""
        async with self._locks(("tag", self.name, tag)):
            index_link = paths.tag_index_link(self.name, tag, digest)
            current_link = paths.tag_current_link(self.name, tag)
            previous = await self._link_content(current_link)
            entry_is_new = previous is None or not await self._exists(index_link)
            # The index entry first: a tag never points at a revision its index lacks.
            link = str(digest).encode()
            write = TagWrite([Put(index_link, link), Put(current_link, link)])
            try:
                yield write
            except BaseException:
                if write.started:
                    # Best effort: the request's own error is the one to report.
                    with contextlib.suppress(OSError, DriverError):
                        await self._undo(tag, digest, previous, entry_is_new)
                raise
            finally:
                self.cache.forget(self.name)

    async def _undo(
        self, tag: str, digest: Digest, previous: bytes | None, entry_is_new: bool
    ) -> None:
        """Take back a failed ``tagging``'s steps, whichever of them were done. The tag's
        current link is replaced atomically: one that still names what it named before
        is left alone; one that names ``digest`` (the list failed after it, at its
        directories' flush) gets its previous content back, so that it never names a
        revision the failed push then removes; one that names anything else is another
        process's, and stays."""
        current_link = paths.tag_current_link(self.name, tag)
        now = await self._link_content(current_link)
        ours = now is not None and now.strip() == str(digest).encode()
        if previous is None:
            if now is None or ours:
                await self.driver.delete(paths.tag_dir(self.name, tag))
                return
        elif ours and now != previous:
            await self.driver.put_content(current_link, previous)
        if entry_is_new:
            with contextlib.suppress(PathNotFound):
                await self.driver.delete(paths.tag_index_entry(self.name, tag, digest))

    async def _link_content(self, path: str) -> bytes | None:
        try:
            return await self.driver.get_content(path)
        except PathNotFound:
            return None

    async def _exists(self, path: str) -> bool:
        try:
            await self.driver.stat(path)
        except PathNotFound:
            return False
        return True

    async def untag(self, tag: str) -> None:
        self.cache.forget(self.name)
        async with self._locks(("tag", self.name, tag)):
            try:
                await self.driver.delete(paths.tag_dir(self.name, tag))
            except PathNotFound:
                raise ManifestUnknown(tag) from None

    async def pushed_at(self, tag: str) -> float:
        """When ``tag`` was last pointed at a manifest: its current link's modification
        time (ManifestUnknown for a tag that points nowhere)."""
        try:
            return (await self.driver.stat(paths.tag_current_link(self.name, tag))).modified
        except PathNotFound:
            raise ManifestUnknown(tag) from None

    async def pulled_at(self, tag: str) -> float | None:
        """When ``tag`` was last pulled as recorded in storage; None if never (or unreadable)."""
        try:
            return float((await self.driver.get_content(paths.tag_pulled(self.name, tag))).decode())
        except (PathNotFound, ValueError, UnicodeDecodeError):
            return None

    async def record_pull(self, tag: str, when: float) -> bool:
        """Write ``tag``'s pull time; False (nothing left behind) when the tag is gone: a
        pull time must never bring back the directory of a deleted tag, which would then
        be listed as a tag that resolves to nothing."""
        async with self._locks(("tag", self.name, tag)):
            if not await self._exists(paths.tag_current_link(self.name, tag)):
                return False
            await self.driver.put_content(paths.tag_pulled(self.name, tag), repr(when).encode())
            if await self._exists(paths.tag_current_link(self.name, tag)):
                return True
            # Untagged by another process meanwhile: take back what was written.
            with contextlib.suppress(PathNotFound):
                await self.driver.delete(paths.tag_pulled(self.name, tag))
                if not await self.driver.list_dir(paths.tag_dir(self.name, tag)):
                    await self.driver.delete(paths.tag_dir(self.name, tag))
            return False

    async def history(self, tag: str) -> list[Digest]:
        """Every digest ``tag`` ever pointed at (its index), the current one included."""
        return [d async for d in digest_tree(self.driver, paths.tag_index_dir(self.name, tag), 0)]

    async def forget_revisions(self, entries: Sequence[tuple[str, Digest]]) -> None:
        """Drop the records that each tag once pointed at a digest (index entries)."""
        await self.driver.delete_many(
            [paths.tag_index_entry(self.name, t, d) for t, d in entries], sole_file=paths.LINK
        )

    async def all(self) -> list[str]:
        """Every tag, sorted (callers must not modify the list); NAME_UNKNOWN for a
        repository that does not exist."""
        return (await self._listing())[1]

    async def _listing(self) -> tuple[Hashable | None, list[str]]:
        """The listing stamp the tags were read at (None: not one to remember them by)
        and the tags, sorted, as :meth:`all`."""
        directory = paths.tags_dir(self.name)
        try:
            # The stamp is read before the listing: a tag added in between changes the
            # next stamp, so a cached list never looks newer than its content.
            stamp = await self.driver.listing_stamp(directory)
            if stamp is not None:
                cached = self.cache.get(self.name, stamp)
                if cached is not None:
                    return stamp, cached
            tags = sorted(await self.driver.list_dir(directory))
        except PathNotFound:
            try:
                await self.driver.stat(paths.repository(self.name))
            except PathNotFound:
                raise NameUnknown(self.name) from None
            return None, []
        if stamp is not None:
            self.cache.put(self.name, stamp, tags)
        return stamp, tags

    async def page(self, limit: int | None, last: str | None) -> tuple[list[str], bool]:
        """Up to ``limit`` tags after ``last``, and whether more remain."""
        return page_of(await self.all(), limit, last)

    async def rendered_page(
        self, limit: int | None, last: str | None, render: PageRenderer[Rendered]
    ) -> Rendered:
        """``render(name, tags, more)`` of :meth:`page`'s answer, remembered while the
        listing's stamp is unchanged (``render`` must depend on nothing else, and what it
        returns must not be modified); made afresh where there is no stamp (S3, a listing
        changed in the last two seconds)."""
        stamp, tags = await self._listing()
        if stamp is None:
            return render(self.name, *page_of(tags, limit, last))
        return self.cache.page(self.name, stamp, tags, limit, last, render)

    async def pointing_at(self, digest: Digest) -> list[str]:
        found = []
        for tag in await self.all():
            try:
                if await self.resolve(tag) == digest:
                    found.append(tag)
            except ManifestUnknown:
                continue
        return found
