"""Tags: a mutable name → manifest digest map per repository, Distribution's layout."""

from __future__ import annotations

import bisect

from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from registry.storage.errors import ManifestUnknown, NameUnknown
from shared.digest import Digest, InvalidDigest, parse_digest


class Tags:
    def __init__(self, name: str, driver: StorageDriver) -> None:
        self.name = name
        self.driver = driver

    async def resolve(self, tag: str) -> Digest:
        try:
            link = await self.driver.get_content(paths.tag_current_link(self.name, tag))
            return parse_digest(link.decode().strip())
        except (PathNotFound, InvalidDigest, UnicodeDecodeError):
            raise ManifestUnknown(tag) from None

    async def tag(self, tag: str, digest: Digest) -> None:
        # The index entry first: a tag never points at a revision its index lacks.
        await self.driver.put_content(
            paths.tag_index_link(self.name, tag, digest), str(digest).encode()
        )
        await self.driver.put_content(paths.tag_current_link(self.name, tag), str(digest).encode())

    async def untag(self, tag: str) -> None:
        try:
            await self.driver.delete(paths.tag_dir(self.name, tag))
        except PathNotFound:
            raise ManifestUnknown(tag) from None

    async def all(self) -> list[str]:
        """Every tag, sorted; NAME_UNKNOWN for a repository that does not exist."""
        try:
            names = await self.driver.list_dir(paths.tags_dir(self.name))
        except PathNotFound:
            try:
                await self.driver.stat(paths.repository(self.name))
            except PathNotFound:
                raise NameUnknown(self.name) from None
            return []
        return sorted(names)

    async def page(self, limit: int | None, last: str | None) -> tuple[list[str], bool]:
        """Up to ``limit`` tags after ``last``, and whether more remain."""
        tags = await self.all()
        start = bisect.bisect_right(tags, last) if last else 0
        if limit is None:
            return tags[start:], False
        selected = tags[start : start + limit]
        return selected, start + limit < len(tags)

    async def pointing_at(self, digest: Digest) -> list[str]:
        found = []
        for tag in await self.all():
            try:
                if await self.resolve(tag) == digest:
                    found.append(tag)
            except ManifestUnknown:
                continue
        return found
