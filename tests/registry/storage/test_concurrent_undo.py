"""A failed manifest push undoes only what it wrote itself, never what a concurrent push
of the same manifest and tag was acknowledged for (the undo of a full disk, item 7).

Two pushes of one manifest under one new tag run at once; the second one's tag write
fails as on a full disk. Both saw the revision and the tag as new before either wrote,
unless pushes of one revision and one tag take turns, so without that the second
push's undo deleted the tag and the revision the first had just stored and acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from registry.oci.digest import digest_of
from registry.storage.driver.base import StorageDriver, StorageFull
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.steps import Step
from registry.storage.registry import Registry

MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    b'"config":{"mediaType":"application/vnd.oci.empty.v1+json","size":2,'
    b'"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},'
    b'"layers":[]}'
)


class SecondTagWriteFails(FilesystemDriver):
    """Slow link writes (so two requests overlap) and a full disk for the second write of
    a tag's current link."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.current_writes = 0

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        await asyncio.sleep(0.02)
        if path.endswith("/current/link"):
            self.current_writes += 1
            if self.current_writes == 2:
                await asyncio.sleep(0.1)  # the other request finishes meanwhile
                raise StorageFull(path)
        await super().put_content(path, content, durable=durable)

    async def run_steps(self, steps: Sequence[Step]) -> None:
        # One step at a time, so that a tag's writes pass through put_content above (the
        # filesystem driver does them in one thread job, past it).
        await StorageDriver.run_steps(self, steps)


async def test_a_failed_push_never_undoes_a_concurrent_acknowledged_one(tmp_path: Path) -> None:
    driver = SecondTagWriteFails(tmp_path)
    registry = Registry(driver)
    repository = registry.repository("app")
    await registry.blob_store.put(digest_of(b"{}"), b"{}")
    await repository.blobs.link(digest_of(b"{}"))
    try:
        results = await asyncio.gather(
            repository.manifests.put("v1", MANIFEST, None),
            repository.manifests.put("v1", MANIFEST, None),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1 and isinstance(failures[0], StorageFull), results
        # The push that succeeded was told its manifest and tag are stored: they are.
        digest = digest_of(MANIFEST)
        assert await repository.tags.resolve("v1") == digest
        assert (await repository.manifests.get(digest)).body == MANIFEST
        assert await repository.tags.all() == ["v1"]
    finally:
        await registry.close()


async def test_a_failed_tag_write_never_undoes_a_concurrent_one(tmp_path: Path) -> None:
    driver = SecondTagWriteFails(tmp_path)
    registry = Registry(driver)
    repository = registry.repository("app")
    digest = digest_of(MANIFEST)
    try:
        results = await asyncio.gather(
            repository.tags.tag("v1", digest),
            repository.tags.tag("v1", digest),
            return_exceptions=True,
        )
        assert sum(isinstance(r, StorageFull) for r in results) == 1, results
        assert await repository.tags.resolve("v1") == digest
    finally:
        await registry.close()
