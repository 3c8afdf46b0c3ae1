"""Links: small files holding a digest, by which a repository claims content.

A layer link says the repository may read a blob; a revision link says it holds a
manifest. Both are the same thing at two places (Distribution's ``linkPathFunc``): one
class, given the path function of its kind.
"""

from __future__ import annotations

from collections.abc import Callable

from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from shared.digest import Digest

LinkDirectory = Callable[[str, Digest], str]


class Links:
    """The links of one kind in one repository."""

    def __init__(self, name: str, driver: StorageDriver, directory: LinkDirectory) -> None:
        self.name = name
        self.driver = driver
        self._directory = directory

    def _link(self, digest: Digest) -> str:
        return f"{self._directory(self.name, digest)}/link"

    async def exists(self, digest: Digest) -> bool:
        try:
            await self.driver.stat(self._link(digest))
        except PathNotFound:
            return False
        return True

    async def write(self, digest: Digest) -> None:
        await self.driver.put_content(self._link(digest), str(digest).encode())

    async def delete(self, digest: Digest) -> bool:
        """Remove the link; False when there was none."""
        try:
            await self.driver.delete(self._directory(self.name, digest))
        except PathNotFound:
            return False
        return True


def layer_links(name: str, driver: StorageDriver) -> Links:
    return Links(name, driver, paths.layer_link_dir)


def revision_links(name: str, driver: StorageDriver) -> Links:
    return Links(name, driver, paths.revision_link_dir)
