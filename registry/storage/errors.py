"""The storage domain's errors: what went wrong, in storage's own terms.

Storage knows nothing of HTTP or the wire error table; ``registry.storage_errors`` maps
each of these, and the drivers' errors re-exported here, to the client's error once, at
the store's edge.
"""

from __future__ import annotations

from typing import Any

from registry.oci.digest import Digest
from registry.storage.driver.base import (
    DriverError,
    PathNotFound,
    SizeInvalid,
    StorageFull,
    StorageUnavailable,
    StorageUnwritable,
)

__all__ = [
    "BlobUnknown",
    "ChunkOutOfOrder",
    "DigestMismatch",
    "DriverError",
    "ManifestBlobUnknown",
    "ManifestInvalid",
    "ManifestUnknown",
    "NameUnknown",
    "PathNotFound",
    "SizeInvalid",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "StorageUnwritable",
    "UploadInvalid",
    "UploadUnknown",
    "range_header",
]


def range_header(size: int) -> str:
    """The upload ``Range`` header: inclusive end, ``0-0`` for nothing (as Distribution)."""
    return f"0-{max(size - 1, 0)}"


class StorageError(Exception):
    """A refusal by storage. ``message`` and ``detail`` are safe to show the client."""

    def __init__(self, message: str | None = None, detail: Any = None) -> None:
        super().__init__(message or type(self).__name__)
        self.message = message
        self.detail = detail


class BlobUnknown(StorageError):
    def __init__(self, digest: Digest) -> None:
        super().__init__(detail={"digest": str(digest)})
        self.digest = digest


class UploadUnknown(StorageError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(detail={"uuid": upload_id[:80]})


class UploadInvalid(StorageError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class ChunkOutOfOrder(StorageError):
    """A chunk that does not start where the upload ends."""

    def __init__(self, size: int, start: int) -> None:
        super().__init__(
            f"chunk starts at {start}, upload is at {size}", {"expected": size, "got": start}
        )
        self.size = size


class DigestMismatch(StorageError):
    def __init__(self, expected: Digest, actual: str) -> None:
        super().__init__(detail={"expected": str(expected), "computed": actual})


class ManifestUnknown(StorageError):
    def __init__(self, reference: str) -> None:
        super().__init__(detail={"reference": reference[:200]})


class ManifestInvalid(StorageError):
    pass


class ManifestBlobUnknown(StorageError):
    def __init__(self, digest: str) -> None:
        super().__init__(detail={"digest": digest})


class NameUnknown(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(detail={"name": name})
