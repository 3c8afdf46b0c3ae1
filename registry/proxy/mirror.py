"""The pull-through cache: which local names mirror which upstream, and how a manifest
or blob of a mirrored repository is answered from the cache or fetched into it.

As Distribution's proxy: a tag is re-checked with the upstream on every pull (a HEAD,
which registries do not count against pull limits) and the cache answers for it when the
upstream cannot (``servestale``); content named by digest never changes, so a cached
manifest or blob is served without asking. What is fetched is stored through the
repository's own manifest and upload paths, digest verified first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from registry.config_proxy import UpstreamConfig
from registry.oci.digest import Digest, InvalidDigest, digest_of, parse_digest
from registry.proxy.fetches import BlobFetch, BlobFetches, BlobOpener, FetchFailed, wait
from registry.proxy.following import UploadFollower
from registry.proxy.upstream import (
    UpstreamClient,
    UpstreamManifest,
    UpstreamMissing,
    UpstreamUnavailable,
)
from registry.storage.blobs import BlobDescriptor
from registry.storage.errors import BlobUnknown, ManifestInvalid, ManifestUnknown, NameUnknown
from registry.storage.manifests import StoredManifest
from registry.storage.registry import Repository
from shared import errors
from shared.errors import RegistryError

log = logging.getLogger("registry.proxy")


def unavailable(error: Exception) -> RegistryError:
    return RegistryError(errors.UNAVAILABLE, str(error), headers={"Retry-After": "10"})


def bad_upstream(message: str) -> RegistryError:
    # 502: the upstream answered, with something that cannot be served.
    return RegistryError(errors.UNAVAILABLE, message, status=502)


@dataclass(frozen=True, slots=True)
class LiveBlob:
    """An uncached blob, sent as it arrives from upstream."""

    descriptor: BlobDescriptor


@dataclass(frozen=True, slots=True)
class StreamedLiveBlob(LiveBlob):
    """Its bytes as they arrive (the live stream, or read back from a remote store)."""

    chunks: AsyncGenerator[bytes, None]  # close it (aclosing) when done with it


@dataclass(frozen=True, slots=True)
class FollowedLiveBlob(LiveBlob):
    """Its download's local data file, to send as it grows (a client that came late)."""

    follower: UploadFollower  # close it (with) when done with it


class Mirror:
    """One upstream and the local names under its prefix."""

    def __init__(self, settings: UpstreamConfig, downloads: asyncio.Semaphore) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.client = UpstreamClient(
            settings.remoteurl,
            settings.username,
            settings.password,
            settings.timeout.total_seconds(),
        )
        self.fetches = BlobFetches(downloads)
        self._manifests: dict[tuple[str, str], asyncio.Future[StoredManifest]] = {}
        self.stale_served = 0  # answers given from the cache while the upstream was down
        self.on_stale: Callable[[], None] = _nothing  # the metrics' counter, when served

    def covers(self, name: str) -> bool:
        return not self.prefix or name.startswith(self.prefix + "/")

    def remote_name(self, name: str) -> str:
        remote = name[len(self.prefix) + 1 :] if self.prefix else name
        if self.settings.library and "/" not in remote:
            remote = "library/" + remote
        return remote

    async def close(self) -> None:
        for pending in list(self._manifests.values()):
            pending.cancel()
        await self.fetches.close()
        await self.client.close()

    # --- manifests ---------------------------------------------------------------------

    async def manifest(self, repository: Repository, reference: Digest | str) -> StoredManifest:
        """The manifest ``reference`` names, cached first if it was not. Concurrent
        requests for the same reference share one answer: fifty nodes pulling the same
        tag at once make one upstream check, not fifty."""
        key = (repository.name, str(reference))
        pending = self._manifests.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._manifest(repository, reference))
            self._manifests[key] = pending
            pending.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(pending)

    def _settled(self, key: tuple[str, str], done: asyncio.Future[StoredManifest]) -> None:
        self._manifests.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved, even if every client hung up meanwhile

    async def _manifest(self, repository: Repository, reference: Digest | str) -> StoredManifest:
        if isinstance(reference, Digest):
            try:
                return await repository.manifests.get(reference)
            except ManifestUnknown:
                pass
            try:
                fetched = await self._get_manifest(repository, str(reference))
            except UpstreamMissing:
                raise ManifestUnknown(str(reference)) from None
            except UpstreamUnavailable as error:
                raise unavailable(error) from None
            return await self._store(repository, reference, reference, fetched)
        try:
            head = await self.client.manifest(self.remote_name(repository.name), reference, True)
        except UpstreamMissing:
            raise ManifestUnknown(reference) from None
        except UpstreamUnavailable as error:
            return await self._stale(repository, reference, error)
        digest = _parse(head.digest)
        if digest is not None and await repository.manifests.has_revision(digest):
            if await _tagged(repository, reference) != digest:
                await repository.tags.tag(reference, digest)
            return await repository.manifests.get(reference)
        try:
            fetched = await self._get_manifest(repository, str(digest or reference))
        except UpstreamMissing:
            raise ManifestUnknown(reference) from None
        except UpstreamUnavailable as error:
            return await self._stale(repository, reference, error)
        if digest is None:
            digest = _parse(fetched.digest) or digest_of(fetched.body)
        return await self._store(repository, reference, digest, fetched)

    async def _get_manifest(self, repository: Repository, reference: str) -> UpstreamManifest:
        return await self.client.manifest(self.remote_name(repository.name), reference, False)

    async def _store(
        self,
        repository: Repository,
        reference: Digest | str,
        digest: Digest,
        fetched: UpstreamManifest,
    ) -> StoredManifest:
        if digest_of(fetched.body, digest.algorithm) != digest:
            log.warning("mirror: upstream sent a manifest not matching %s; not cached", digest)
            raise bad_upstream("upstream sent a manifest that does not match its digest")
        try:
            stored, _ = await repository.manifests.put(
                reference, fetched.body, fetched.media_type or None, check_references=False
            )
        except ManifestInvalid as error:
            # The client asked for nothing invalid: the upstream sent what cannot be kept.
            log.warning("mirror: upstream sent an unusable manifest %s: %s", digest, error)
            raise bad_upstream("upstream sent a manifest this registry cannot store") from None
        return stored

    async def _stale(
        self, repository: Repository, tag: str, error: UpstreamUnavailable
    ) -> StoredManifest:
        if not self.settings.servestale:
            raise unavailable(error)
        try:
            manifest = await repository.manifests.get(tag)
        except ManifestUnknown:
            raise unavailable(error) from None
        self.stale_served += 1
        self.on_stale()
        log.warning(
            "mirror: %s unreachable (%s); serving cached %s:%s",
            self.settings.remoteurl,
            error,
            repository.name,
            tag,
        )
        return manifest

    async def tags(self, repository: Repository) -> list[str]:
        """The upstream's tags of the repository, sorted, as Distribution's proxy lists
        them; the cached ones when the upstream cannot answer."""
        try:
            return sorted(set(await self.client.tags(self.remote_name(repository.name))))
        except UpstreamMissing:
            raise NameUnknown(repository.name) from None
        except UpstreamUnavailable as error:
            log.warning(
                "mirror: %s unreachable (%s); listing cached tags of %s",
                self.settings.remoteurl,
                error,
                repository.name,
            )
            return await repository.tags.all()

    # --- blobs -------------------------------------------------------------------------

    async def blob_descriptor(self, repository: Repository, digest: Digest) -> BlobDescriptor:
        """A HEAD's answer: the cached blob's, else the upstream's size (nothing fetched)."""
        try:
            return await repository.blobs.stat(digest)
        except BlobUnknown:
            pass
        try:
            size = await self.client.blob_size(self.remote_name(repository.name), digest)
        except UpstreamMissing:
            raise BlobUnknown(digest) from None
        except UpstreamUnavailable as error:
            raise unavailable(error) from None
        return BlobDescriptor(digest, size)

    async def blob(
        self, repository: Repository, digest: Digest, whole: bool
    ) -> BlobDescriptor | LiveBlob:
        """The cached blob, or (``whole``: the client wants it all) the bytes of the one
        download of it as they arrive (from the live stream, or from the data file being
        written for a client that came later); a ranged request waits for the download
        instead."""
        try:
            return await repository.blobs.stat(digest)
        except BlobUnknown:
            pass
        fetch = self.fetches.start(repository, digest, self._opener(repository, digest))
        fetch.link_also(repository)
        reader = fetch.join() if whole else None
        try:
            size = await wait(fetch.size)
        except UpstreamMissing:
            raise BlobUnknown(digest) from None
        except UpstreamUnavailable as error:
            raise unavailable(error) from None
        descriptor = BlobDescriptor(digest, size)
        if reader is not None:
            return StreamedLiveBlob(descriptor, reader.read(size))
        if whole:  # bytes are already flowing: follow them as they are written
            try:
                follower = fetch.follower()
            except FileNotFoundError:  # committed meanwhile (or failed): see ``done``
                return await self._committed(repository, fetch)
            if follower is None:
                return StreamedLiveBlob(descriptor, fetch.follow())
            return FollowedLiveBlob(descriptor, follower)
        return await self._committed(repository, fetch)

    async def _committed(self, repository: Repository, fetch: BlobFetch) -> BlobDescriptor:
        try:
            await wait(fetch.done)
        except FetchFailed:
            # Why is in the log (it may name storage paths): the client gets a fixed text.
            raise unavailable(Exception("fetching the blob from the upstream failed")) from None
        return await repository.blobs.stat(fetch.digest)

    def _opener(self, repository: Repository, digest: Digest) -> BlobOpener:
        remote = self.remote_name(repository.name)
        return lambda: self.client.blob(remote, digest)


def _nothing() -> None:
    pass


class Mirrors:
    """Every configured upstream, chosen by the longest prefix of a local name."""

    def __init__(self, upstreams: list[UpstreamConfig], max_downloads: int) -> None:
        # One bound for every upstream: it is this process's memory and sockets it keeps.
        downloads = asyncio.Semaphore(max_downloads)
        self.mirrors = sorted(
            (Mirror(u, downloads) for u in upstreams), key=lambda m: -len(m.prefix)
        )

    def for_name(self, name: str) -> Mirror | None:
        # Asked on every manifest and blob request: a registry with no upstream (most)
        # answers without making a generator (about 1 µs a request).
        if not self.mirrors:
            return None
        return next((m for m in self.mirrors if m.covers(name)), None)

    @property
    def stale_served(self) -> int:
        """Answers served from the cache while an upstream was unreachable (a counter
        for the metrics endpoint)."""
        return sum(m.stale_served for m in self.mirrors)

    async def close(self) -> None:
        for mirror in self.mirrors:
            await mirror.close()


def _parse(value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return parse_digest(value)
    except InvalidDigest:
        return None


async def _tagged(repository: Repository, tag: str) -> Digest | None:
    try:
        return await repository.tags.resolve(tag)
    except ManifestUnknown:
        return None
