"""The storage facade handlers talk to: one Registry over one driver, and a Repository
view per name that bundles its blobs, uploads, manifests, tags and referrers."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from registry.storage.blobs import BlobStore, LinkedBlobs
from registry.storage.catalog import catalog_page
from registry.storage.driver.base import StorageDriver
from registry.storage.hashstates import HashStateStore
from registry.storage.locks import KeyedLocks
from registry.storage.manifests import ForeignURLPolicy, ManifestContentCache, Manifests
from registry.storage.pulls import PullRecorder, flush_periodically
from registry.storage.purge import purge_periodically, remove_leftovers
from registry.storage.referrers import Referrers
from registry.storage.tags import TagListCache, Tags
from registry.storage.upload_slots import UploadSlots
from registry.storage.uploads import HashStates, Uploads

# Views kept for reuse: a view is stateless (names, the driver, the process's shared
# caches and locks), and building one is six objects per request on the hot path.
MAX_REPOSITORY_VIEWS = 1024


@dataclass(frozen=True, slots=True)
class Repository:
    name: str
    blobs: LinkedBlobs
    uploads: Uploads
    manifests: Manifests
    tags: Tags
    referrers: Referrers


class Registry:
    def __init__(
        self,
        driver: StorageDriver,
        url_policy: ForeignURLPolicy | None = None,
        pull_resolution: float | None = None,
        gc_grace: float = 0.0,
        secret: bytes | None = None,
    ) -> None:
        """``pull_resolution``: record tags' pull times, each written at most once per
        that many seconds (None: no recording, as in a read-only registry).
        ``gc_grace``: online garbage collection's grace period (docs/online-gc.md).
        ``secret``: the key the instances sharing this storage authenticate their
        uploads' stored hash states with (``http.secret``; None: this process's own)."""
        self.driver = driver
        self.url_policy = url_policy or ForeignURLPolicy()
        self.blob_store = BlobStore(driver, gc_grace)
        self._hashes = HashStates()
        self._hash_states = HashStateStore(driver, secret)
        self._locks = KeyedLocks()
        self._upload_slots = UploadSlots()
        self._manifest_cache = ManifestContentCache()
        self._tag_lists = TagListCache()
        self.pulls = PullRecorder(pull_resolution) if pull_resolution is not None else None
        self._views: OrderedDict[str, Repository] = OrderedDict()

    async def check_health(self) -> None:
        """Raise DriverError unless the storage backend answers (the health check)."""
        await self.driver.check_health()

    def repository(self, name: str) -> Repository:
        """A view of ``name``; the caller has validated it against the name grammar."""
        view = self._views.get(name)
        if view is not None:
            self._views.move_to_end(name)
            return view
        view = self._views[name] = self._new_view(name)
        if len(self._views) > MAX_REPOSITORY_VIEWS:  # names come from clients: bounded
            self._views.popitem(last=False)
        return view

    def _new_view(self, name: str) -> Repository:
        blobs = LinkedBlobs(name, self.blob_store)
        tags = self._tags(name)
        referrers = Referrers(name, self.driver)
        return Repository(
            name=name,
            blobs=blobs,
            uploads=Uploads(
                name,
                self.driver,
                self.blob_store,
                blobs,
                self._hashes,
                self._hash_states,
                self._locks,
                self._upload_slots,
            ),
            manifests=Manifests(
                name,
                self.blob_store,
                blobs,
                tags,
                referrers,
                self._manifest_cache,
                self.url_policy,
                self._locks,
                self.pulls,
            ),
            tags=tags,
            referrers=referrers,
        )

    async def catalog(self, limit: int, last: str | None) -> tuple[list[str], bool]:
        return await catalog_page(self.driver, limit, last)

    async def purge_uploads_periodically(self, age: float, interval: float, dry_run: bool) -> None:
        """Delete uploads older than ``age`` seconds every ``interval``, until cancelled."""
        await purge_periodically(self.driver, age, interval, dry_run)

    async def remove_leftovers(self) -> None:
        """Remove the temporary files of writers killed before their rename (once)."""
        await remove_leftovers(self.driver)

    def _tags(self, name: str) -> Tags:
        return Tags(name, self.driver, self._tag_lists, self._locks)

    async def flush_pulls(self) -> int:
        """Write the pull times noted since the last flush that are due (see ``pulls``)."""
        return await self.pulls.flush(self._tags) if self.pulls is not None else 0

    async def flush_pulls_periodically(self) -> None:
        """Flush pull times every minute until cancelled (then call ``flush_pulls``)."""
        if self.pulls is not None:
            await flush_periodically(self.pulls, self._tags)

    async def close(self) -> None:
        await self.driver.close()
