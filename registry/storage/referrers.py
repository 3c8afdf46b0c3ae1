"""Referrers: for each subject digest, the descriptors of the manifests that name it.

Each referrer's descriptor is written when its manifest is pushed, so listing the
referrers of a subject reads one small file per referrer and no manifest.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from registry.storage.driver.steps import Put


class Referrers:
    def __init__(self, name: str, driver: StorageDriver) -> None:
        self.name = name
        self.driver = driver

    def adding(self, subject: Digest, referrer: Digest, descriptor: dict[str, Any]) -> Put:
        """The step (``StorageDriver.run_steps``) that records ``referrer`` of
        ``subject``: its manifest's PUT runs it with the revision link and any tag."""
        return Put(
            paths.referrer_entry(self.name, subject, referrer),
            json.dumps(descriptor, sort_keys=True).encode(),
        )

    async def remove(self, subject: Digest, referrer: Digest) -> None:
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(paths.referrer_dir(self.name, subject, referrer))

    async def for_subject(self, subject: Digest, artifact_type: str | None) -> list[dict[str, Any]]:
        base = paths.referrers_dir(self.name, subject)
        found: list[dict[str, Any]] = []
        for algorithm in await self._children(base):
            for encoded in await self._children(f"{base}/{algorithm}"):
                try:
                    referrer = parse_digest(f"{algorithm}:{encoded}")
                    raw = await self.driver.get_content(
                        paths.referrer_entry(self.name, subject, referrer)
                    )
                    descriptor = json.loads(raw)
                except (InvalidDigest, PathNotFound, ValueError):
                    continue
                if artifact_type is None or descriptor.get("artifactType") == artifact_type:
                    found.append(descriptor)
        found.sort(key=lambda d: str(d.get("digest")))
        return found

    async def _children(self, path: str) -> list[str]:
        try:
            return sorted(await self.driver.list_dir(path))
        except PathNotFound:
            return []
