"""One upstream download per uncached blob, teed to storage and to every client waiting.

The download runs in a task of its own (a client hanging up does not stop it) and writes
through the repository's normal upload path: the bytes are appended to an upload, and
``Uploads.finish`` verifies the digest before the blob becomes visible, so nothing
partial or wrong is ever cached. Clients that ask while the download has not sent its
first byte read the same bytes as they arrive; clients that come later are sent the
upload's data file as far as it is written and follow it as it grows (``following``: by
the kernel, from a local file; read back in pieces where storage keeps none). Each reader
of the live stream holds at most ``READER_BUFFER`` bytes it has not taken yet (a reader
that stays full for ``STALL_TIMEOUT`` is dropped), so memory stays flat whatever the
blob's size. Every reader withholds the blob's last
byte until the digest is verified (everything before it goes out as it arrives): a
client of a download that fails sees its transfer fail. The readers of the live stream
get it as soon as the check passes, not after the commit that follows (its flushes):
the bytes are known right by then.

Storage keeps its own pace: the upload reads the download's bytes from a spool (at most
``STORE_AHEAD`` bytes it has not taken), so the event loop goes on receiving and sending
while threads hash and write the bytes before. A storage failure ends the download, and
the clients' transfers with it, as an upstream failure does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from registry.oci.digest import Digest
from registry.proxy.following import UploadFollower
from registry.storage.blobs import BlobDescriptor, BlobStore
from registry.storage.errors import PathNotFound, UploadUnknown
from registry.storage.registry import Repository
from registry.storage.uploads import Uploads

log = logging.getLogger("registry.proxy")

READER_BUFFER = 1024 * 1024
# How far storage (hashing and writing, in threads) may fall behind the clients' stream
# before reading from the upstream waits for it. With none, the download received the
# next MiB only once the last one was hashed and written: the event loop and the
# threads took turns, and a cold pull used one core of two.
STORE_AHEAD = 4 * 1024 * 1024
STALL_TIMEOUT = 60.0
FOLLOW_INTERVAL = 0.05  # how often a later reader of a remote store looks for new bytes

# Opens the upstream's blob: an async context manager of (size, chunks).
BlobOpener = Callable[[], contextlib.AbstractAsyncContextManager[tuple[int, AsyncIterator[bytes]]]]


class FetchFailed(Exception):
    """The download did not end in a verified blob; the message says why."""


class _Reader:
    """One client's view of a download: the chunks it has not read yet."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self._finished = False
        self._error: BaseException | None = None
        self.closed = False

    def push(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._ready.set()
        if self._buffered >= READER_BUFFER:
            self.room.clear()

    def finish(self, error: BaseException | None) -> None:
        self._finished, self._error = True, error
        self._ready.set()

    async def read(self, size: int) -> AsyncGenerator[bytes, None]:
        """The blob's ``size`` bytes as they arrive, all but the last one at once: it
        waits for the digest check. (Holding back the newest chunk until the next came
        kept a client a whole chunk behind, idle while the next one arrived.)"""
        sent = 0
        held: list[bytes] = []  # from the last byte on: sent once verified
        try:
            while True:
                await self._ready.wait()
                while self._chunks:
                    chunk = self._chunks.popleft()
                    self._buffered -= len(chunk)
                    if self._buffered < READER_BUFFER:
                        self.room.set()
                    free = size - 1 - sent  # bytes that may go before the check
                    if free >= len(chunk):
                        sent += len(chunk)
                        yield chunk
                        continue
                    if free > 0:  # once per blob: the piece holding the last byte
                        sent += free
                        yield chunk[:free]
                        chunk = chunk[free:]
                    held.append(chunk)
                if self._finished:
                    if self._error is not None:
                        raise FetchFailed(str(self._error))
                    for chunk in held:
                        yield chunk
                    return
                self._ready.clear()
        finally:
            self.closed = True
            self.room.set()


class _StorageStopped(Exception):
    """The upload stopped taking bytes before the download ended: it failed."""


class _Spool:
    """The download's bytes on their way to storage: the upload reads them (``drain``)
    at its own pace while the download goes on receiving and broadcasting, holding at
    most STORE_AHEAD bytes that storage has not taken yet."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False
        self._error: BaseException | None = None
        self._stopped = False

    async def put(self, chunk: bytes) -> None:
        while self._held >= STORE_AHEAD and not self._stopped:
            self._room.clear()
            await self._room.wait()
        if self._stopped:
            raise _StorageStopped
        self._chunks.append(chunk)
        self._held += len(chunk)
        self._arrived.set()

    def end(self, error: BaseException | None = None) -> None:
        """No more bytes; ``error``: the download failed, and so must the upload."""
        self._ended, self._error = True, error
        self._arrived.set()

    def stopped(self, storing: asyncio.Future[Any]) -> None:
        """The upload (``storing``) is over: it failed, or took everything. Nothing more
        is taken; its failure, if any, is the download's to report (retrieved here)."""
        if not storing.cancelled():
            storing.exception()
        self._stopped = True
        self._chunks.clear()
        self._room.set()

    async def drain(self) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._held -= len(chunk)
                if self._held < STORE_AHEAD:
                    self._room.set()
                yield chunk
            if self._ended:
                if self._error is not None:
                    raise FetchFailed(str(self._error))
                return
            self._arrived.clear()
            await self._arrived.wait()


class BlobFetch:
    """One download in progress."""

    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        self.size: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[BlobDescriptor] = asyncio.get_running_loop().create_future()
        # Resolved once the digest is checked (before the commit), failed with the fetch.
        self.verified: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sending = False  # the first byte went out: a new reader would miss it
        self._readers: list[_Reader] = []
        self._also: dict[str, Repository] = {}
        self._upload: tuple[Uploads, str] | None = None  # where the bytes are written
        self._store: BlobStore | None = None

    async def follow(self) -> AsyncGenerator[bytes, None]:
        """The whole blob for a reader that came once bytes were flowing: what is already
        written, read back from the upload, then the rest as it is written, then (once
        verified) the end from the committed blob. The last byte waits for the digest
        check, as for the readers of the live stream."""
        size = await wait(self.size)
        offset = 0
        while not self.done.done() and self._upload is not None:
            uploads, upload_id = self._upload
            try:
                # Hold the last byte back until the digest is verified.
                limit = min((await uploads.status(upload_id)).size, size - 1)
                before = offset
                if limit > offset:
                    written = uploads.read(upload_id, offset)
                    try:
                        async for chunk in written:
                            piece = chunk[: limit - offset]
                            yield piece
                            offset += len(piece)
                            if offset >= limit:
                                break
                    finally:
                        if isinstance(written, AsyncGenerator):  # left early: it holds a file
                            await written.aclose()
                if offset > before:
                    continue
            except (UploadUnknown, PathNotFound):
                pass  # committed (moved to the blob store) or abandoned: see ``done``
            with contextlib.suppress(TimeoutError, FetchFailed):
                await asyncio.wait_for(asyncio.shield(self.done), FOLLOW_INTERVAL)
        try:
            await wait(self.done)
        except FetchFailed as error:
            raise FetchFailed(str(error)) from None
        assert self._store is not None
        async for chunk in self._store.reader(self.digest, offset):
            yield chunk

    def follower(self) -> UploadFollower | None:
        """A reader that came once bytes were flowing, on the upload's local data file;
        None when storage keeps no local file (``follow`` reads it back instead).
        FileNotFoundError when the upload is gone: committed, or abandoned."""
        assert self._upload is not None, "bytes flow only once the upload is started"
        uploads, upload_id = self._upload
        path = uploads.local_file(upload_id)
        if path is None:
            return None
        return UploadFollower.open(path, self.size.result(), self.verified)

    def link_also(self, repository: Repository) -> None:
        """Link the blob in ``repository`` too once verified (another repository of
        the same upstream asked for the same blob while it was downloading)."""
        self._also.setdefault(repository.name, repository)

    def join(self) -> _Reader | None:
        """A reader of the whole blob, or None when bytes already went out."""
        if self.sending:
            return None
        reader = _Reader()
        self._readers.append(reader)
        return reader

    async def _broadcast(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.sending = True
            for reader in list(self._readers):
                if reader.closed:
                    self._readers.remove(reader)
                    continue
                if not reader.room.is_set():
                    try:
                        await asyncio.wait_for(reader.room.wait(), STALL_TIMEOUT)
                    except TimeoutError:
                        reader.finish(FetchFailed("client too slow"))
                        self._readers.remove(reader)
                        continue
                reader.push(chunk)
            yield chunk

    def _verified(self) -> None:
        """The digest is checked: every reader may have the last byte."""
        if not self.verified.done():
            self.verified.set_result(None)
        self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        if error is not None and not self.verified.done():
            self.verified.set_exception(FetchFailed(str(error)))
            self.verified.exception()  # retrieved: no follower may be waiting
        for reader in self._readers:
            reader.finish(error)
        self._readers.clear()


class BlobFetches:
    """The downloads in progress in this process, by digest (single-flight), at most as
    many at once as ``downloads`` allows (shared by every upstream): a download waits
    for its turn before it asks the upstream, and its clients wait with it."""

    def __init__(self, downloads: asyncio.Semaphore) -> None:
        self._downloads = downloads
        self._fetches: dict[Digest, BlobFetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def current(self, digest: Digest) -> BlobFetch | None:
        return self._fetches.get(digest)

    def start(self, repository: Repository, digest: Digest, opener: BlobOpener) -> BlobFetch:
        """The download of ``digest`` into ``repository``, started unless one runs."""
        fetch = self._fetches.get(digest)
        if fetch is not None:
            return fetch
        fetch = BlobFetch(digest)
        self._fetches[digest] = fetch
        task = asyncio.create_task(self._run(fetch, repository, opener))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fetch

    async def _run(self, fetch: BlobFetch, repository: Repository, opener: BlobOpener) -> None:
        uploads = repository.uploads
        upload_id: str | None = None
        try:
            # The turn is held until the blob is committed: the bytes are buffered and
            # written until then. Waiting for it fails the fetch like any error if the
            # registry stops meanwhile.
            async with self._downloads:
                async with opener() as (size, chunks):
                    fetch.size.set_result(size)
                    upload_id = (await uploads.start()).upload_id
                    fetch._upload, fetch._store = (uploads, upload_id), repository.blobs.store
                    await _broadcast_and_store(fetch, chunks, uploads, upload_id, size)
                # The live readers get their last bytes as soon as the digest is
                # checked: the commit's flushes (tens of ms) are no client's wait.
                descriptor = await uploads.finish(upload_id, fetch.digest, verified=fetch._verified)
            for other in fetch._also.values():
                if other.name != repository.name:
                    await other.blobs.link(fetch.digest)
        except BaseException as error:
            # Forgotten first: a client asking from now on starts a fresh download.
            self._fetches.pop(fetch.digest, None)
            log.warning(
                "mirror: fetching %s for %s failed: %s", fetch.digest, repository.name, error
            )
            if not fetch.size.done():
                fetch.size.set_exception(error)
                fetch.size.exception()  # retrieved: a waiter may be gone
            fetch.done.set_exception(FetchFailed(str(error)))
            fetch.done.exception()
            fetch._finish(error)
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await uploads.cancel(upload_id)
            if not isinstance(error, Exception):
                raise
        else:
            self._fetches.pop(fetch.digest, None)
            fetch.done.set_result(descriptor)
            fetch._verified()

    async def close(self) -> None:
        """Stop the downloads in progress (their uploads are removed)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _broadcast_and_store(
    fetch: BlobFetch, chunks: AsyncIterator[bytes], uploads: Uploads, upload_id: str, size: int
) -> None:
    """Send ``chunks`` to the fetch's readers and append them to the upload. Storage
    reads them from a spool, in a task of its own, so that receiving and sending (this
    loop) and hashing and writing (threads) overlap instead of taking turns; if either
    side fails, both do. Hashed with the digest's algorithm, no state stored for another
    instance: the upload is finished here, right after."""
    spool = _Spool()
    storing = asyncio.ensure_future(
        uploads.append(
            upload_id,
            spool.drain(),
            length=size,
            algorithm=fetch.digest.algorithm,
            handed_on=False,
        )
    )
    storing.add_done_callback(spool.stopped)
    try:
        async for chunk in fetch._broadcast(chunks):
            await spool.put(chunk)
        spool.end()
        await asyncio.shield(storing)  # a cancel (shutdown) comes here, not into it
    except _StorageStopped:
        await asyncio.shield(storing)  # raises the upload's failure
        raise
    except BaseException as error:
        spool.end(error)  # the upload fails too: nothing is committed
        # Waited for, never cancelled: a batch may be in a writing thread still, and
        # the upload is removed next (its failure is retrieved by ``stopped``).
        await asyncio.wait([storing])
        raise


T = TypeVar("T")


async def wait(awaitable: Awaitable[T]) -> T:
    """``awaitable``, shielded: a client hanging up never cancels the shared download."""
    return await asyncio.shield(awaitable)
