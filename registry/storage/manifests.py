"""Manifests of one repository: stored byte for byte as blobs, linked as revisions,
validated against the blobs and manifests the repository holds."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from registry.oci.digest import Digest, digest_of
from registry.storage.blobs import BlobStore, LinkedBlobs
from registry.storage.driver.steps import Step
from registry.storage.errors import (
    BlobUnknown,
    DigestMismatch,
    DriverError,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
)
from registry.storage.gc_safety import CollectionBusy
from registry.storage.locks import KeyedLocks
from registry.storage.manifest_formats import (
    Descriptor,
    ParsedManifest,
    media_type_of,
    parse_manifest,
)
from registry.storage.pulls import PullRecorder
from registry.storage.referrers import Referrers
from registry.storage.tags import Tags, TagWrite

INLINE_PARSE_LIMIT = 64 * 1024  # bytes of manifest parsed on the event loop itself
SECURE_TRIES = 3  # refresh-and-check rounds a PUT may need to write within its bound


@dataclass(frozen=True, slots=True)
class ForeignURLPolicy:
    """``validation.manifests.urls``: which URLs a foreign layer may point at. With no
    ``allow`` every URL is allowed (as Distribution); ``deny`` always wins."""

    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None

    @classmethod
    def from_patterns(cls, allow: list[str], deny: list[str]) -> ForeignURLPolicy:
        def combined(patterns: list[str]) -> re.Pattern[str] | None:
            return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

        return cls(combined(allow), combined(deny))

    def check(self, descriptor: Descriptor) -> None:
        if not descriptor.urls:
            raise ManifestInvalid(f"foreign layer {descriptor.digest} has no urls")
        for url in descriptor.urls:
            allowed = self.allow is None or self.allow.search(url) is not None
            if not allowed or (self.deny is not None and self.deny.search(url)):
                raise ManifestInvalid("foreign layer url not allowed", detail={"url": url[:500]})


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    body: bytes


class ManifestContentCache:
    """Manifest bodies by digest. Content addressed by digest never changes, so the only
    thing that must still be checked per request is the repository's link to it."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        # Keyed by the digest's hex: see "Keys by hex" in registry.oci.digest.
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    def get(self, digest: Digest) -> tuple[str, bytes] | None:
        key = digest.hex
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, digest: Digest, media_type: str, body: bytes) -> None:
        if digest.hex in self._entries or len(body) > self._max_bytes // 16:
            return
        self._entries[digest.hex] = (media_type, body)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)


class Manifests:
    def __init__(
        self,
        name: str,
        store: BlobStore,
        blobs: LinkedBlobs,
        tags: Tags,
        referrers: Referrers,
        cache: ManifestContentCache,
        url_policy: ForeignURLPolicy,
        locks: KeyedLocks,
        pulls: PullRecorder | None = None,
    ) -> None:
        self.name = name
        self.pulls = pulls  # notes when a tag is read (retention's keeppulledwithin)
        self._locks = locks
        self.url_policy = url_policy
        self.store = store
        self.blobs = blobs
        self.tags = tags
        self.referrers = referrers
        self.cache = cache

    async def resolve(self, reference: Digest | str) -> Digest:
        """The digest a tag points at, or a digest the repository holds."""
        if isinstance(reference, str):
            return await self.tags.resolve(reference)
        if not await self.blobs.revisions.exists(reference):
            raise ManifestUnknown(str(reference))
        return reference

    async def get(self, reference: Digest | str) -> StoredManifest:
        """The manifest ``reference`` names; reading it by tag counts as a pull of the tag
        (clients resolve a tag first, then fetch by digest)."""
        digest = await self.resolve(reference)
        if isinstance(reference, str) and self.pulls is not None:
            self.pulls.note(self.name, reference)
        cached = self.cache.get(digest)
        if cached is not None:
            return StoredManifest(digest, *cached)
        try:
            body = await self.store.get(digest)
        except BlobUnknown:
            raise ManifestUnknown(str(reference)) from None
        media_type = media_type_of(body)
        self.cache.put(digest, media_type, body)
        return StoredManifest(digest, media_type, body)

    async def noticed(self, digest: Digest) -> None:
        """A client was told the manifest exists (HEAD) and may next push a tag, an index
        or a referrer naming it: refresh its content's ``lastref`` (at most once per
        ``grace/4``), so that collecting untagged manifests spares it a while."""
        await self.store.guard.noticed(digest)

    async def has_revision(self, digest: Digest) -> bool:
        return await self.blobs.revisions.exists(digest)

    async def put(
        self,
        reference: Digest | str,
        body: bytes,
        content_type: str | None,
        *,
        check_references: bool = True,
    ) -> tuple[StoredManifest, ParsedManifest]:
        """Store a pushed manifest. A pull-through cache stores what it fetched without
        ``check_references``: its blobs are fetched when first asked for, as Distribution's
        proxy stores with layer verification skipped."""
        algorithm = reference.algorithm if isinstance(reference, Digest) else "sha256"
        digest = digest_of(body, algorithm)
        if isinstance(reference, Digest) and digest != reference:
            raise DigestMismatch(reference, str(digest))
        parsed = await _parse(body, content_type)
        if check_references:
            await self._check_references(parsed)
        # One push of a revision at a time in this process: a failed one then undoes only
        # a revision it wrote, never one a concurrent push of the same bytes acknowledged.
        async with self._locks(("manifest", self.name, digest)):
            await self._store(reference, digest, body, parsed, check_references)
        self.cache.put(digest, parsed.media_type, body)
        return StoredManifest(digest, parsed.media_type, body), parsed

    async def _store(
        self,
        reference: Digest | str,
        digest: Digest,
        body: bytes,
        parsed: ParsedManifest,
        check_references: bool,
    ) -> None:
        revision_is_new = not await self.blobs.revisions.exists(digest)
        try:
            # The content is shared by digest and may serve another repository already:
            # it stays even if this request fails (garbage collection reclaims it).
            # Written whole, it is fresh: the refresh below need not touch it again.
            writing = time.monotonic()
            await self.store.put(digest, body)
            self.store.guard.made_fresh([digest], writing)
            # The revision is what collection marks from: written within the bound of
            # the last refresh, so any collection that began too late to see it spares
            # what it names. A slow storage gets three tries.
            for _ in range(SECURE_TRIES):
                refreshed_at = await self._secure_references(digest, body, parsed, check_references)
                if self.store.guard.in_time(refreshed_at):
                    break
            else:
                raise _too_slow()
            await self._link(reference, digest, body, parsed, refreshed_at)
        except BaseException:
            # A failed push (a full disk) leaves no revision that was not there before.
            if revision_is_new:
                await self._forget_revision(digest, parsed)
            raise

    async def _link(
        self,
        reference: Digest | str,
        digest: Digest,
        body: bytes,
        parsed: ParsedManifest,
        refreshed_at: float,
    ) -> None:
        """The revision link, the referrer's entry (with a subject) and the tag's two
        links (by tag), in this order, as one step list: on the filesystem one thread
        job instead of three, whose flushes can share journal commits (issue 17). The
        tag comes last, once the revision it names is in place; it undoes itself."""
        steps: list[Step] = [self.blobs.revisions.writing(digest)]
        if parsed.subject is not None:
            descriptor = _referrer_descriptor(digest, body, parsed)
            steps.append(self.referrers.adding(parsed.subject.digest, digest, descriptor))
        async with contextlib.AsyncExitStack() as held:
            tag: TagWrite | None = None
            if isinstance(reference, str):
                # Under the tag's lock (waiting for it is time too, hence the check after).
                tag = await held.enter_async_context(self.tags.tagging(reference, digest))
            # Every link within the bound of the last refresh, checked once the list is
            # ready: a collection that began too late to see them (the revision it marks
            # from, the tag that keeps an untagged manifest) saw the refresh instead
            # (docs/online-gc.md).
            if not self.store.guard.in_time(refreshed_at):
                raise _too_slow()
            if tag is not None:
                steps += tag.start()
            await _to_the_end(self.store.driver.run_steps(steps))

    async def _forget_revision(self, digest: Digest, parsed: ParsedManifest) -> None:
        # Best effort: the request's own error is the one to report, not the undo's.
        with contextlib.suppress(OSError, DriverError):
            if parsed.subject is not None:
                await self.referrers.remove(parsed.subject.digest, digest)
            await self.blobs.revisions.delete(digest)
        await self.blobs.forget(digest)

    async def _secure_references(
        self, digest: Digest, body: bytes, parsed: ParsedManifest, require: bool = True
    ) -> float:
        """Garbage collection's check at PUT (docs/online-gc.md): refresh every blob the
        manifest names and its own content, wait out collectors deleting any, then find
        each in storage (not the cache, which may remember a blob just deleted). When
        the references were last refreshed (monotonic). Without ``require`` (a mirror's
        manifest, whose blobs are fetched when first asked for), missing references are
        no error: only those present are protected."""
        blobs = [d.digest for d in parsed.blobs if not d.is_foreign]
        children = [d.digest for d in parsed.manifests]
        # The subject is refreshed too (never required: it may come later), so that a
        # collection deleting untagged manifests keeps one a referrer is pushed for.
        subject = [parsed.subject.digest] if parsed.subject is not None else []
        secured = await self.store.guard.secure([*blobs, *children, *subject, digest])
        missing = secured.missing
        if digest in missing:  # its own content, collected between its write and now
            await self.store.put(digest, body)
            if (await self.store.guard.secure([digest])).missing:
                raise CollectionBusy("the manifest's content was collected as it was written")
        if not require:
            return secured.refreshed_at
        for blob in blobs:
            if blob in missing or not await self.blobs.is_linked(blob, cached=False):
                await self.blobs.forget(blob)
                raise ManifestBlobUnknown(str(blob))
        for child in children:
            if child in missing or not await self.blobs.revisions.exists(child):
                raise ManifestBlobUnknown(str(child))
        return secured.refreshed_at

    async def _check_references(self, parsed: ParsedManifest) -> None:
        async def check_blob(digest: Digest) -> None:
            if not await self.blobs.is_linked(digest):
                raise ManifestBlobUnknown(str(digest))

        async def check_manifest(digest: Digest) -> None:
            if not await self.blobs.revisions.exists(digest):
                raise ManifestBlobUnknown(str(digest))

        for descriptor in parsed.blobs:
            if descriptor.is_foreign:
                self.url_policy.check(descriptor)
        # Foreign layers live elsewhere by design and are not required here.
        checks = [check_blob(d.digest) for d in parsed.blobs if not d.is_foreign]
        checks += [check_manifest(d.digest) for d in parsed.manifests]
        for start in range(0, len(checks), 64):
            await asyncio.gather(*checks[start : start + 64])

    async def delete(self, digest: Digest) -> list[str]:
        """Delete a manifest revision, every tag pointing at it, and its referrer entry;
        the tags removed."""
        # Under the revision's lock, as its push: a push of the same manifest under a new
        # tag then lands wholly before this lists the tags (and is untagged) or after it
        # (and finds the revision gone), never between, leaving a tag without it.
        async with self._locks(("manifest", self.name, digest)):
            return await self._delete(digest)

    async def _delete(self, digest: Digest) -> list[str]:
        manifest = await self.get(digest)
        untagged = await self.tags.pointing_at(digest)
        for tag in untagged:
            await self.tags.untag(tag)
        try:
            parsed = parse_manifest(manifest.body, manifest.media_type)
        except Exception:
            parsed = None
        if parsed is not None and parsed.subject is not None:
            await self.referrers.remove(parsed.subject.digest, digest)
        await self.blobs.forget(digest)
        try:
            if not await self.blobs.revisions.delete(digest):
                raise ManifestUnknown(str(digest))
        finally:
            await self.blobs.forget(digest)
        return untagged


async def _to_the_end(writing: Awaitable[None]) -> None:
    """Await ``writing`` even if the request is cancelled meanwhile (a client gone, the
    shutdown's drain timeout), and only then pass the cancellation on: the undo that
    follows must not run while a file thread is still making the names it takes back
    (a tag placed after its revision was forgotten)."""
    task = asyncio.ensure_future(writing)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _too_slow() -> CollectionBusy:
    return CollectionBusy("the push took longer than half of storage.gc.graceperiod; retry it")


async def _parse(body: bytes, content_type: str | None) -> ParsedManifest:
    """``parse_manifest``, in a thread for a large body: checking and decoding up to 4 MiB
    of hostile JSON takes long enough to stall every other client if done on the loop."""
    if len(body) <= INLINE_PARSE_LIMIT:
        return parse_manifest(body, content_type)
    return await asyncio.to_thread(parse_manifest, body, content_type)


def _referrer_descriptor(digest: Digest, body: bytes, parsed: ParsedManifest) -> dict[str, Any]:
    descriptor: dict[str, Any] = {
        "mediaType": parsed.media_type,
        "digest": str(digest),
        "size": len(body),
    }
    if parsed.artifact_type:
        descriptor["artifactType"] = parsed.artifact_type
    if parsed.annotations:
        descriptor["annotations"] = parsed.annotations
    return descriptor
