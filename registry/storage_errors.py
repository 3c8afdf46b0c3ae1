"""Storage's refusals and the drivers' failures as the client's wire errors: the one
place where storage meets the error table, used by the error middleware."""

from __future__ import annotations

from registry.storage import errors as storage
from registry.storage.errors import DriverError, SizeInvalid, StorageFull, StorageUnavailable
from shared import errors
from shared.errors import ErrorCode, RegistryError

_CODES: dict[type[Exception], ErrorCode] = {
    storage.BlobUnknown: errors.BLOB_UNKNOWN,
    storage.UploadUnknown: errors.BLOB_UPLOAD_UNKNOWN,
    storage.UploadInvalid: errors.BLOB_UPLOAD_INVALID,
    storage.ChunkOutOfOrder: errors.RANGE_INVALID,
    storage.DigestMismatch: errors.DIGEST_INVALID,
    storage.ManifestUnknown: errors.MANIFEST_UNKNOWN,
    storage.ManifestInvalid: errors.MANIFEST_INVALID,
    storage.ManifestBlobUnknown: errors.MANIFEST_BLOB_UNKNOWN,
    storage.NameUnknown: errors.NAME_UNKNOWN,
    SizeInvalid: errors.SIZE_INVALID,
    StorageUnavailable: errors.UNAVAILABLE,
    StorageFull: errors.STORAGE_FULL,
}


def registry_error(error: storage.StorageError | DriverError) -> RegistryError | None:
    """The client's error for ``error``; None for a driver failure no client should see
    described (a path that vanished is a bug: the caller logs it and answers 500)."""
    code = next((c for kind, c in _CODES.items() if isinstance(error, kind)), None)
    if code is None:
        return None
    headers: dict[str, str] = {}
    if isinstance(error, storage.ChunkOutOfOrder):
        # Where the upload ends, so the client knows where to resume.
        headers["Range"] = storage.range_header(error.size)
    if isinstance(error, StorageUnavailable):
        headers["Retry-After"] = "5"
    if isinstance(error, storage.StorageError):
        return RegistryError(code, error.message, error.detail, headers=headers)
    if isinstance(error, StorageFull):  # the driver's path is for the log, not the client
        return RegistryError(code, headers=headers)
    return RegistryError(code, str(error) or None, headers=headers)
