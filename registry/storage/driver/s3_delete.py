"""Deleting from S3: what a path holds, then DeleteObjects in batches.

A path is a key or a key prefix (a directory); deleting it deletes every object under
it and aborts the multipart uploads left unfinished there (a killed writer's, or an
interrupted server-side copy's). ``delete_many`` finds what many paths hold a few at
once and deletes all of it in as few DeleteObjects requests as possible, so garbage
collection costs about two listings per blob and one delete per thousand objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.storage.driver.base import StorageUnavailable

if TYPE_CHECKING:
    from registry.storage.driver.s3 import S3Driver

log = logging.getLogger("registry.storage.s3")

DELETE_BATCH = 1000  # S3's limit of keys per DeleteObjects
LISTING_CONCURRENCY = 16  # paths looked up at once by delete_many


@dataclass(frozen=True, slots=True)
class Doomed:
    """What one path holds: objects with their sizes, and unfinished uploads."""

    objects: dict[str, int]
    uploads: list[tuple[str, str]]  # (key, upload id)

    @property
    def empty(self) -> bool:
        return not self.objects and not self.uploads


async def find(driver: S3Driver, path: str) -> Doomed:
    key = driver.key(path)
    prefix = driver.prefix(key)
    objects: dict[str, int] = {}
    async for page in driver.pages(prefix):
        objects.update((o["Key"], int(o.get("Size", 0))) for o in page["Contents"])
    # A path is a file or a directory, never both: only a childless one may be a file.
    if not objects and key and (head := await driver.head(key)) is not None:
        objects[key] = int(head.get("ContentLength", 0))
    return Doomed(objects, await unfinished_uploads(driver, key))


async def remove(driver: S3Driver, found: Sequence[Doomed]) -> None:
    """Abort the uploads and delete the objects that ``find`` found."""
    for doomed in found:
        for upload_key, upload_id in doomed.uploads:
            await driver.call(
                "AbortMultipartUpload",
                lambda s3, k=upload_key, u=upload_id: s3.abort_multipart_upload(  # type: ignore[misc]
                    Bucket=driver.bucket, Key=k, UploadId=u
                ),
                frozenset({"NoSuchUpload"}),
            )
    keys = [key for doomed in found for key in doomed.objects]
    for start in range(0, len(keys), DELETE_BATCH):
        batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
        result = await driver.call(
            "DeleteObjects",
            lambda s3, b=batch: s3.delete_objects(  # type: ignore[misc]
                Bucket=driver.bucket, Delete={"Objects": b, "Quiet": True}
            ),
        )
        if result.get("Errors"):
            log.error("S3 DeleteObjects left %d objects", len(result["Errors"]))
            raise StorageUnavailable()


async def delete_many(driver: S3Driver, paths: Sequence[str]) -> list[int | None]:
    """Delete every path; the bytes removed at each, or None when nothing was there."""
    found: list[Doomed | None] = [None] * len(paths)
    pending = iter(range(len(paths)))

    async def worker() -> None:
        for index in pending:
            found[index] = await find(driver, paths[index])

    await asyncio.gather(*(worker() for _ in range(min(LISTING_CONCURRENCY, len(paths)))))
    present = [doomed for doomed in found if doomed is not None and not doomed.empty]
    await remove(driver, present)
    return [
        None if doomed is None or doomed.empty else sum(doomed.objects.values()) for doomed in found
    ]


async def unfinished_uploads(driver: S3Driver, key: str) -> list[tuple[str, str]]:
    """Multipart uploads at ``key`` or under it, as (key, upload id)."""
    found: list[tuple[str, str]] = []
    markers: dict[str, Any] = {}
    while True:
        page = await driver.call(
            "ListMultipartUploads",
            lambda s3, m=markers: s3.list_multipart_uploads(  # type: ignore[misc]
                Bucket=driver.bucket, Prefix=key, **m
            ),
        )
        for upload in page.get("Uploads", []):
            name = upload.get("Key", "")
            if name == key or name.startswith(driver.prefix(key)):
                found.append((name, upload.get("UploadId", "")))
        if not page.get("IsTruncated"):
            return found
        markers = {
            "KeyMarker": page.get("NextKeyMarker", ""),
            "UploadIdMarker": page.get("NextUploadIdMarker", ""),
        }
