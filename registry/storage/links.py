"""Links: small files holding a digest, by which a repository claims content.

A layer link says the repository may read a blob; a revision link says it holds a
manifest. Both are the same thing at two places (Distribution's ``linkPathFunc``): one
class, given the path function of its kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from registry.oci.digest import Digest, parse_names
from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from registry.storage.driver.steps import Put

LinkDirectory = Callable[[str, Digest], str]
LinkRoot = Callable[[str], str]


class Links:
    """The links of one kind in one repository."""

    def __init__(
        self, name: str, driver: StorageDriver, root: LinkRoot, directory: LinkDirectory
    ) -> None:
        self.name = name
        self.driver = driver
        self._root = root  # <root>/<algorithm>/<hex>/link for every link of the kind
        self._directory = directory

    def _link(self, digest: Digest) -> str:
        return f"{self._directory(self.name, digest)}/{paths.LINK}"

    async def exists(self, digest: Digest) -> bool:
        try:
            await self.driver.stat(self._link(digest))
        except PathNotFound:
            return False
        return True

    async def modified(self, digest: Digest) -> float:
        """When the link was last written (a manifest's push time); PathNotFound if none."""
        return (await self.driver.stat(self._link(digest))).modified

    async def write(self, digest: Digest) -> None:
        step = self.writing(digest)
        await self.driver.put_content(step.path, step.content)

    def writing(self, digest: Digest) -> Put:
        """``write`` as a step (``StorageDriver.run_steps``)."""
        return Put(self._link(digest), str(digest).encode())

    async def delete(self, digest: Digest) -> bool:
        """Remove the link; False when there was none."""
        try:
            await self.driver.delete(self._directory(self.name, digest))
        except PathNotFound:
            return False
        return True

    async def delete_many(self, digests: Sequence[Digest]) -> list[bool]:
        """Remove many links at once (garbage collection); whether each was there."""
        removed = await self.driver.delete_many(
            [self._directory(self.name, d) for d in digests], sole_file=paths.LINK
        )
        return [size is not None for size in removed]

    async def all(self) -> AsyncIterator[Digest]:
        """Every digest linked (in no particular order)."""
        async for digest in digest_tree(self.driver, self._root(self.name), depth=0):
            yield digest


async def digest_tree(driver: StorageDriver, root: str, depth: int) -> AsyncIterator[Digest]:
    """The digests of a ``<root>/<algorithm>/[<depth> fan-out levels>/]<hex>`` tree (links
    have no fan-out level, the blob store one: ``<hex[:2]>``). Entries that are not
    digests, such as a killed writer's temporary files, are passed over."""
    for algorithm in await _children(driver, root):
        levels = [f"{root}/{algorithm}"]
        for _ in range(depth):
            levels = [f"{d}/{c}" for d in levels for c in await _children(driver, d)]
        for directory in levels:
            for digest in parse_names(algorithm, await _children(driver, directory)):
                yield digest


async def _children(driver: StorageDriver, directory: str) -> list[str]:
    try:
        return await driver.list_dir(directory)
    except PathNotFound:
        return []


def layer_links(name: str, driver: StorageDriver) -> Links:
    return Links(name, driver, paths.layers_dir, paths.layer_link_dir)


def revision_links(name: str, driver: StorageDriver) -> Links:
    return Links(name, driver, paths.revisions_dir, paths.revision_link_dir)
