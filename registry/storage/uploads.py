"""Blob uploads: an append-only data file per upload, hashed while it is written.

The data of an upload lives in the repository's ``_uploads/<id>/`` area until the client
names its digest; it is then verified and moved atomically to the blob store. Hashing is
incremental: after each chunk the running hash is kept in this process and stored beside
the data (``hashstates``), so whichever instance receives the next chunk, or the final
PUT, resumes it; the data is re-read only when no valid state matches its size and its
version (the driver's name for the exact bytes a writer left: a state of a chunk that
lost a race to another written at the same offset is never used over the winner's).
A request that leaves the data within STATELESS_SIZE stores no state: its few bytes are
read again instead. For a first request that streams its body without a length (as
Docker's client does), the body's first STATELESS_SIZE bytes decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from registry.oci.digest import Digest, Hasher, new_hasher
from registry.storage import paths
from registry.storage.blobs import BlobDescriptor, BlobStore, LinkedBlobs
from registry.storage.driver.base import (
    Content,
    ContentChanged,
    FileWriter,
    PathNotFound,
    StorageDriver,
    StorageFull,
)
from registry.storage.driver.steps import Delete, Step
from registry.storage.errors import (
    ChunkOutOfOrder,
    DigestMismatch,
    UploadInvalid,
    UploadUnknown,
)
from registry.storage.hashstates import RESUMABLE, HashStateStore, ResumableHasher
from registry.storage.locks import KeyedLocks
from registry.storage.upload_pipe import PIECE_SIZE, ends_within, pipe
from registry.storage.upload_slots import Slot, UploadSlots

# An upload whose data ends within this many bytes stores no hash state. The library
# whose states can be stored (rehashes) holds the GIL while it hashes, about 2.8 ms per
# MiB that every request on the event loop waits for, where hashlib releases it; a state
# only spares whoever continues the upload elsewhere a re-read of the data, and reading
# one piece again costs no more than making the state did (issue 17: about a tenth of
# the GIL's time in a push of small images went to such states).
STATELESS_SIZE = PIECE_SIZE
DEFAULT_ALGORITHM = "sha256"
# Verifications of a finish whose data another instance keeps appending to, at most.
FINISH_ATTEMPTS = 3

log = logging.getLogger("registry.storage.uploads")


def is_valid_upload_id(upload_id: str) -> bool:
    """Upload ids are the UUIDs this registry made: nothing else reaches a path."""
    try:
        return str(uuid.UUID(upload_id)) == upload_id
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class UploadStatus:
    upload_id: str
    size: int
    # The driver's version of the data (FileInfo.version): hash states are tied to it.
    version: str | None = None


class HashStates:
    """Running hashes of uploads in progress in this process, by (repository, upload
    id), bounded: the stored states (``HashStateStore``) without a storage round trip."""

    def __init__(self, capacity: int = 4096) -> None:
        self._states: OrderedDict[tuple[str, str], tuple[int, str, Hasher]] = OrderedDict()
        self._capacity = capacity

    def take(
        self, key: tuple[str, str], offset: int, version: str, algorithm: str
    ) -> Hasher | None:
        """The ``algorithm`` hash of the first ``offset`` bytes of the data's ``version``,
        if this process has it."""
        state = self._states.pop(key, None)
        if state is None or state[:2] != (offset, version) or state[2].name != algorithm:
            return None
        return state[2]

    def keep(self, key: tuple[str, str], offset: int, version: str, hasher: Hasher) -> None:
        self._states[key] = (offset, version, hasher)
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)

    def forget(self, key: tuple[str, str]) -> None:
        self._states.pop(key, None)


class Uploads:
    """The uploads of one repository."""

    def __init__(
        self,
        name: str,
        driver: StorageDriver,
        store: BlobStore,
        blobs: LinkedBlobs,
        hashes: HashStates,
        states: HashStateStore,
        locks: KeyedLocks,
        slots: UploadSlots | None = None,
    ) -> None:
        """``slots``: the process's bound on bodies held between receipt and write."""
        self.name = name
        self.driver = driver
        self.store = store
        self.blobs = blobs
        self.hashes = hashes
        self.states = states
        self._locks = locks
        self.slots = slots

    def _lock(self, upload_id: str) -> asyncio.Lock:
        # One request at a time per upload in this process.
        return self._locks(("upload", upload_id))

    async def start(self) -> UploadStatus:
        upload_id = str(uuid.uuid4())
        now = time.time()
        async with self._removed_when_storage_is_full(upload_id):
            # Not flushed: a 202 acknowledges nothing stored (nor is a PATCH's data
            # flushed). Lost in a power loss, the upload is unknown and the client starts
            # again; the purge judges an upload without its start time by its data's age.
            # Written in place: its id is answered only once this is done.
            await self.driver.put_new(
                paths.upload_started_at(self.name, upload_id), repr(now).encode()
            )
            # Empty and new, in place as well: a writer cost an open, two fstats and a
            # close on the event loop, and the objects around them (issue 17).
            await self.driver.put_new(paths.upload_data(self.name, upload_id), b"")
        # No hash to keep: the hash of no bytes is a fresh one, wherever the data goes.
        return UploadStatus(upload_id, 0)

    async def status(self, upload_id: str) -> UploadStatus:
        """The upload's data as it is now; UploadUnknown without it. The start time is
        not read: only the purge judges by it (no answer carries it), and the data,
        made right after it, is what a request continues. Reading it too cost every
        PATCH and PUT a file's open, read and close on the event loop (issue 17), or on
        S3 a GET."""
        if not is_valid_upload_id(upload_id):
            raise UploadUnknown(upload_id)
        try:
            info = await self.driver.stat(paths.upload_data(self.name, upload_id))
        except PathNotFound:
            raise UploadUnknown(upload_id) from None
        return UploadStatus(upload_id, info.size, info.version)

    async def append(
        self,
        upload_id: str,
        body: AsyncIterator[bytes],
        start: int | None = None,
        length: int | None = None,
        algorithm: str = DEFAULT_ALGORITHM,
        handed_on: bool = True,
    ) -> UploadStatus:
        """Append a chunk. ``start`` (from Content-Range) must be where the upload ends;
        ``length``, when declared, must equal the bytes that arrive. The ``algorithm``
        hash state at the new end is stored for whichever instance receives the next
        request (the algorithm of the digest the client announced it will finish with).
        ``handed_on=False``: this process finishes the upload itself right after (a
        pull-through fetch), so no state is stored and the faster hashlib hashes."""
        return await self._append(upload_id, body, start, length, algorithm, handed_on)

    async def _append(
        self,
        upload_id: str,
        body: AsyncIterator[bytes],
        start: int | None,
        length: int | None,
        algorithm: str,
        resumable: bool,
    ) -> UploadStatus:
        async with (
            self._lock(upload_id),
            self._removed_when_storage_is_full(upload_id),
            # The data moved into the blob store by another instance's finish meanwhile.
            self._unknown_once_taken(upload_id),
        ):
            if not is_valid_upload_id(upload_id):
                raise UploadUnknown(upload_id)
            # The writer's open of the data tells its size and version, the upload's
            # status: no stat of it first (one syscall on the event loop per PATCH, on
            # S3 a HEAD; issue 17). A missing one is unknown (``_unknown_once_taken``).
            writer = await self.driver.writer(
                paths.upload_data(self.name, upload_id), append=True, existing=True
            )
            offset = writer.size
            written = await self._write(
                upload_id, writer, start, body, algorithm, resumable, length
            )
            if length is not None and written != length:
                raise UploadInvalid(f"received {written} bytes, {length} declared")
            return UploadStatus(upload_id, offset + written)

    async def _write(
        self,
        upload_id: str,
        writer: FileWriter,
        start: int | None,
        body: AsyncIterator[bytes],
        algorithm: str,
        resumable: bool,
        length: int | None,
    ) -> int:
        """Write ``body`` with ``writer`` (closed here, whatever happens) from where the
        data ends, which must be ``start`` when the client said."""
        offset = writer.size
        slot: Slot | None = None
        try:
            if start is not None and start != offset:
                raise ChunkOutOfOrder(offset, start)
            wants_state = _wants_state(resumable, algorithm, offset, length)
            if wants_state is None:
                # A body of unknown length: a state only if it does not end within the
                # small size (library hashing holds the GIL; hashlib's does not).
                body, ended, slot = await ends_within(body, STATELESS_SIZE, self.slots)
                wants_state = not ended
            # The hash of exactly the bytes this writer continues, or none.
            base = writer.base_version
            hasher = await self._resume(upload_id, offset, base, algorithm, wants_state)
            held, slot = slot, None
            written = await pipe(body, writer, hasher, self.slots, held)
        finally:
            if slot is not None:
                slot.release()
            # On failure the hash may be ahead of the file: drop it, finish re-reads.
            await writer.close()
        # A writer that finds its base replaced under it (S3) no longer vouches for it.
        version = writer.version if writer.base_version == base else None
        if hasher is not None and version is not None:
            self.hashes.keep((self.name, upload_id), offset + written, version, hasher)
            if wants_state and written and isinstance(hasher, ResumableHasher):
                await self.states.save(self.name, upload_id, offset + written, version, hasher)
        return written

    async def _resume(
        self, upload_id: str, offset: int, version: str | None, algorithm: str, wants_state: bool
    ) -> Hasher | None:
        """The hash of the first ``offset`` bytes of the data's ``version``: this
        process's own, else the stored state, else (None) none at all, and finishing will
        re-read the data. ``wants_state``: a hash whose state can be stored (the request
        is not the last, and leaves more than STATELESS_SIZE bytes)."""
        if offset == 0:
            # No bytes, whatever the version. hashlib is faster and releases the GIL; the
            # library's hasher only where the state is handed on.
            return ResumableHasher(algorithm) if wants_state else new_hasher(algorithm)
        if version is None:
            return None  # the driver cannot name the bytes: no hash can be tied to them
        kept = self.hashes.take((self.name, upload_id), offset, version, algorithm)
        if kept is not None and (not wants_state or isinstance(kept, ResumableHasher)):
            return kept
        if algorithm not in RESUMABLE:
            return kept
        stored = await self.states.load(self.name, upload_id, algorithm, offset, version)
        if stored is not None:
            return stored
        if not wants_state or offset > STATELESS_SIZE:
            return kept
        # An upload that was small had no state stored: its few bytes are hashed again,
        # so that the state stored after this request covers them.
        return await self._rehashed(upload_id, offset, version, algorithm)

    async def _rehashed(
        self, upload_id: str, offset: int, version: str, algorithm: str
    ) -> ResumableHasher | None:
        """A storable hash of the first ``offset`` bytes of the data, read again; None
        unless the data is still the ``version`` it was before they were read."""
        hasher = ResumableHasher(algorithm)
        path = paths.upload_data(self.name, upload_id)
        left = offset
        async with contextlib.aclosing(self.driver.reader(path)) as chunks:
            async for chunk in chunks:
                hasher.update(chunk[:left])
                left -= min(left, len(chunk))
                if not left:
                    break
        if left or (await self.driver.stat(path)).version != version:
            return None
        return hasher

    async def finish(
        self,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes] | None = None,
        start: int | None = None,
        length: int | None = None,
        verified: Callable[[], None] | None = None,
    ) -> BlobDescriptor:
        """Append the last chunk, verify the digest, and make the blob visible.
        ``verified`` is called once the digest is checked, before the blob is committed
        (flushed, moved and linked): a pull-through download releases its clients' last
        bytes then instead of after the flushes."""
        if body is not None:
            # The last chunk: hashed with the digest's algorithm, its state not stored.
            await self._append(upload_id, body, start, length, digest.algorithm, False)
        async with (
            self._lock(upload_id),
            self._removed_when_storage_is_full(upload_id),
            self._unknown_once_taken(upload_id),
        ):
            for _ in range(FINISH_ATTEMPTS):
                status = await self.status(upload_id)
                actual = await self._digest_of(upload_id, status, digest.algorithm)
                if actual != digest.hex:
                    await self._remove(upload_id)
                    raise DigestMismatch(digest, f"{digest.algorithm}:{actual}")
                if verified is not None:
                    verified()
                    verified = None  # once: a later attempt checks the same digest again
                # The blob moved in (if missing), then linked, then the upload's
                # directory removed: in this order, each step as durable as on its own,
                # in one go (one thread job on the filesystem instead of three).
                adopting = time.monotonic()  # no later than the refresh before the move
                steps = await self._adoption(upload_id, digest, status)
                moved_in = bool(steps)
                steps += [
                    self.blobs.linking(digest),
                    Delete(paths.upload_dir(self.name, upload_id)),
                ]
                self.hashes.forget((self.name, upload_id))
                try:
                    await self.driver.run_steps(steps)
                except ContentChanged:
                    # Another instance appended after the digest was checked (the lock
                    # is this process's only): the blob store got nothing, nor was the
                    # blob linked, and the data as it is now is checked again.
                    continue
                if moved_in:
                    self.store.guard.made_fresh([digest], adopting)
                await self.blobs.linked(digest)
                return BlobDescriptor(digest, status.size)
            raise UploadInvalid("the upload kept changing while it was being finished")

    async def _adoption(self, upload_id: str, digest: Digest, status: UploadStatus) -> list[Step]:
        """What makes the verified data the blob ``digest``, under garbage collection's
        protocol: a blob already there is refreshed and kept (same bytes by digest:
        nothing to do); a missing one is made fresh and is to be moved in, only as the
        content the digest was checked over (``status``: its size and version; the move
        raises ContentChanged if not)."""
        data_path = paths.upload_data(self.name, upload_id)
        guard = self.store.guard
        if not (await guard.secure([digest])).missing:
            return []
        return [
            guard.lastref.before_adopt(digest, data_path),
            self.store.adoption(data_path, digest, _content(status)),
        ]

    async def _digest_of(self, upload_id: str, status: UploadStatus, algorithm: str) -> str:
        hasher = await self._resume(upload_id, status.size, status.version, algorithm, False)
        if hasher is None:
            hasher = new_hasher(algorithm)
            loop = asyncio.get_running_loop()
            async for chunk in self.driver.reader(paths.upload_data(self.name, upload_id)):
                await loop.run_in_executor(None, hasher.update, chunk)
        return hasher.hexdigest()

    def read(self, upload_id: str, offset: int) -> AsyncIterator[bytes]:
        """The data of an upload from ``offset`` as far as it is written now (a pull-through
        cache's later readers follow a download this way); PathNotFound once it is gone."""
        return self.driver.reader(paths.upload_data(self.name, upload_id), offset)

    def local_file(self, upload_id: str) -> Path | None:
        """The upload's data as a local file (for sendfile), or None when the backend
        keeps none. Committing the upload renames this file into the blob store: a handle
        opened on it goes on reading the same bytes, the blob's."""
        return self.driver.local_path(paths.upload_data(self.name, upload_id))

    async def cancel(self, upload_id: str) -> None:
        async with self._lock(upload_id):
            await self.status(upload_id)
            await self._remove(upload_id)

    @contextlib.asynccontextmanager
    async def _unknown_once_taken(self, upload_id: str) -> AsyncIterator[None]:
        """An upload whose data vanishes while it is being finished was taken by another
        instance finishing (or cancelling) it at the same moment: the lock is this
        process's only, and nginx resends a PUT that is slow to answer to the next
        instance. It is then unknown here, as to any later request; not a storage
        failure (a 500)."""
        try:
            yield
        except PathNotFound:
            raise UploadUnknown(upload_id) from None

    @contextlib.asynccontextmanager
    async def _removed_when_storage_is_full(self, upload_id: str) -> AsyncIterator[None]:
        """An upload the storage has no room for is deleted at once, its partial data
        with it, instead of holding the space until the purge days later. (An upload
        broken off by the client stays, to be resumed.)"""
        try:
            yield
        except StorageFull:
            await self._remove(upload_id)
            raise

    async def _remove(self, upload_id: str) -> None:
        self.hashes.forget((self.name, upload_id))
        with contextlib.suppress(PathNotFound):
            await self.driver.delete(paths.upload_dir(self.name, upload_id))


def _wants_state(resumable: bool, algorithm: str, offset: int, length: int | None) -> bool | None:
    """Whether a request's hash state is to be stored: it is not the upload's last, the
    algorithm's state can be, and the data may end beyond STATELESS_SIZE. None: the body
    decides, a first request that streams it without a length (as Docker's client does)."""
    if not resumable or algorithm not in RESUMABLE:
        return False
    if length is None and offset == 0:
        return None
    return length is None or offset + length > STATELESS_SIZE


def _content(status: UploadStatus) -> Content | None:
    """The content the digest was checked over, as the driver names it (if it can)."""
    return None if status.version is None else Content(status.size, status.version)
