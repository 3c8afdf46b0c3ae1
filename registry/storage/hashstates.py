"""Resumable hash states of uploads, kept in storage beside the upload's data.

After each chunk the running SHA-256 (or SHA-512) of an upload is written to
``_uploads/<id>/hashstates/<algorithm>/<offset>``, where Distribution keeps its own, so
that any instance (or a restarted one) continues hashing from the state at the offset the
data has reached, and finishing an upload never re-reads it. A state that is missing, or
whose offset is not the upload's size, is simply not used: the caller then re-reads.

A state is also tied to the version of the data it was computed over (the driver's
``FileWriter.version``): on S3 two instances given different chunks at the same offset
both write, the last complete write wins, and the last state saved may be the other
body's. A state is used only over the very version it names, so a blob is never taken
for the digest of bytes that lost such a race.

The state is the exported internal state of RustCrypto's SHA-2 through ``rehashes``
(docs/scaling.md says why that library): a fixed-size byte string that the library parses
and validates itself, never unpickled. A forged state could make the digest of data that
was never sent come out as the client's ``digest=`` and so let a wrong blob pass; each
state is therefore stored behind an HMAC-SHA256 over the repository, the upload id, the
algorithm, the offset, the data's version, the library's version and the state, keyed
from ``http.secret``. A state that fails the check (tampered, truncated, copied from
another upload or offset, computed over another version of the data, written by another
library version or under another secret) is treated as missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.metadata
import logging
import secrets

import rehashes

from registry.storage import paths
from registry.storage.driver.base import DriverError, PathNotFound, StorageDriver

log = logging.getLogger("registry")

_LIBRARIES: dict[str, type[rehashes.PySha256] | type[rehashes.PySha512]] = {
    "sha256": rehashes.PySha256,
    "sha512": rehashes.PySha512,
}
# The algorithms whose state can be exported and resumed (sha384 cannot: it re-reads).
RESUMABLE = frozenset(_LIBRARIES)
# States of another version of the library are not trusted to mean the same thing.
_LIBRARY_TAG = f"rehashes {importlib.metadata.version('rehashes')}".encode()
_KEY_CONTEXT = b"portside upload hash state key v1"
_MAC_SIZE = hashlib.sha256().digest_size


class ResumableHasher:
    """A hashlib-like hasher (``update``, ``hexdigest``, ``copy``) whose internal state
    can be exported and restored."""

    def __init__(
        self, algorithm: str, inner: rehashes.PySha256 | rehashes.PySha512 | None = None
    ) -> None:
        self.name = algorithm
        self._inner = inner if inner is not None else _LIBRARIES[algorithm]()

    def update(self, data: bytes, /) -> None:
        self._inner.update(data)

    def hexdigest(self) -> str:
        # ``finalize`` leaves the running state as it was (checked in the tests).
        return self._inner.finalize()

    def copy(self) -> ResumableHasher:
        return ResumableHasher(self.name, _LIBRARIES[self.name].deserialize(self.export()))

    def export(self) -> bytes:
        return self._inner.serialize()

    @classmethod
    def restore(cls, algorithm: str, state: bytes) -> ResumableHasher | None:
        """The hasher ``state`` was exported from; None if the library refuses it."""
        try:
            return cls(algorithm, _LIBRARIES[algorithm].deserialize(state))
        except (KeyError, ValueError):
            return None


# Exported states have one size per algorithm: a stored file of any other size is refused
# before the library sees it, and no more than that is ever read.
_STATE_SIZES = {algorithm: len(ResumableHasher(algorithm).export()) for algorithm in RESUMABLE}


class HashStateStore:
    """Saves and loads the authenticated hash states of uploads through a driver."""

    def __init__(self, driver: StorageDriver, secret: bytes | None) -> None:
        """``secret``: shared by the instances that continue each other's uploads
        (``http.secret``); without one, a key of this process alone, so that only this
        process resumes its own states and other instances re-read."""
        self.driver = driver
        self._key = (
            hmac.new(secret, _KEY_CONTEXT, hashlib.sha256).digest()
            if secret
            else secrets.token_bytes(32)
        )

    def _mac(
        self, name: str, upload_id: str, algorithm: str, offset: int, version: str, state: bytes
    ) -> bytes:
        # Every field but the last is free of NUL bytes (names and ids are validated,
        # versions are short printable strings): the joined message is unambiguous.
        fields = (name, upload_id, algorithm, str(offset), version)
        encoded = (field.encode() for field in fields)
        message = b"\x00".join((_KEY_CONTEXT, *encoded, _LIBRARY_TAG, state))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def save(
        self, name: str, upload_id: str, offset: int, version: str, hasher: ResumableHasher
    ) -> None:
        """Store ``hasher`` as the state of the first ``offset`` bytes of the data's
        ``version``. Best effort: a state that cannot be written costs a re-read at the
        end, not the chunk."""
        state = hasher.export()
        content = self._mac(name, upload_id, hasher.name, offset, version, state) + state
        path = paths.upload_hash_state(name, upload_id, hasher.name, offset)
        try:
            # Not flushed: a PATCH's 202 acknowledges nothing stored, and its data is not
            # flushed either: a flushed state would protect nothing it describes. A state
            # lost in a power loss costs a re-read at the end; one that outlives the
            # chunk it covers names an offset (and a version) the data no longer has,
            # and is not used. Flushing it cost a data flush and 2-3 directory flushes
            # per chunk (issue 17).
            await self.driver.put_content(path, content, durable=False)
        except DriverError as error:
            log.warning(
                "upload %s: hash state not saved at offset %d (%s); finishing it will "
                "re-read its data",
                upload_id,
                offset,
                type(error).__name__,
            )

    async def load(
        self, name: str, upload_id: str, algorithm: str, offset: int, version: str
    ) -> ResumableHasher | None:
        """The stored state of the first ``offset`` bytes of the data's ``version``, if
        there is a valid one."""
        size = _STATE_SIZES.get(algorithm)
        if size is None:
            return None
        path = paths.upload_hash_state(name, upload_id, algorithm, offset)
        content = await self._read_at_most(path, _MAC_SIZE + size)
        if content is None or len(content) != _MAC_SIZE + size:
            return None
        given, state = content[:_MAC_SIZE], content[_MAC_SIZE:]
        expected = self._mac(name, upload_id, algorithm, offset, version, state)
        if not hmac.compare_digest(given, expected):
            log.warning(
                "upload %s: ignoring a hash state that fails its check (computed over other "
                "data at offset %d, e.g. a chunk sent twice at once, or tampered with); "
                "the data will be re-read",
                upload_id,
                offset,
            )
            return None
        return ResumableHasher.restore(algorithm, state)

    async def _read_at_most(self, path: str, limit: int) -> bytes | None:
        """The file's content, or None if it is missing, unreadable or over ``limit``."""
        pieces: list[bytes] = []
        size = 0
        chunks = self.driver.reader(path)
        try:
            async for chunk in chunks:
                pieces.append(chunk)
                size += len(chunk)
                if size > limit:
                    return None
        except (PathNotFound, DriverError):
            return None
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(DriverError):
                    await close()
        return b"".join(pieces)
