"""Domain errors raised by storage; each is already the wire error the client gets."""

from __future__ import annotations

from typing import Any

from shared import errors
from shared.digest import Digest
from shared.errors import RegistryError


def range_header(size: int) -> str:
    """The upload ``Range`` header: inclusive end, ``0-0`` for nothing (as Distribution)."""
    return f"0-{max(size - 1, 0)}"


class BlobUnknown(RegistryError):
    def __init__(self, digest: Digest) -> None:
        super().__init__(errors.BLOB_UNKNOWN, detail={"digest": str(digest)})


class UploadUnknown(RegistryError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(errors.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id[:80]})


class UploadInvalid(RegistryError):
    def __init__(self, message: str, *, status: int = 400, **headers: str) -> None:
        super().__init__(errors.BLOB_UPLOAD_INVALID, message, status=status, headers=headers)


class ChunkOutOfOrder(RegistryError):
    """A chunk that does not start where the upload ends: 416 with the current Range."""

    def __init__(self, size: int, start: int) -> None:
        super().__init__(
            errors.RANGE_INVALID,
            f"chunk starts at {start}, upload is at {size}",
            detail={"expected": size, "got": start},
            headers={"Range": range_header(size)},
        )


class DigestMismatch(RegistryError):
    def __init__(self, expected: Digest, actual: str) -> None:
        super().__init__(
            errors.DIGEST_INVALID,
            detail={"expected": str(expected), "computed": actual},
        )


class ManifestUnknown(RegistryError):
    def __init__(self, reference: str) -> None:
        super().__init__(errors.MANIFEST_UNKNOWN, detail={"reference": reference[:200]})


class ManifestInvalid(RegistryError):
    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(errors.MANIFEST_INVALID, message, detail=detail)


class ManifestBlobUnknown(RegistryError):
    def __init__(self, digest: str) -> None:
        super().__init__(errors.MANIFEST_BLOB_UNKNOWN, detail={"digest": digest})


class NameUnknown(RegistryError):
    def __init__(self, name: str) -> None:
        super().__init__(errors.NAME_UNKNOWN, detail={"name": name})


class InsufficientStorage(RegistryError):
    """What a client is told when the driver found no space for a write (StorageFull)."""

    def __init__(self) -> None:
        super().__init__(errors.STORAGE_FULL)
