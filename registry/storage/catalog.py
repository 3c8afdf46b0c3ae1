"""The catalog: repository names in lexical order, one page at a time.

The walk visits directories in the order their names sort as repository names, skips
whole subtrees that sort before ``last``, and stops as soon as the page is full, so a
page costs what it returns rather than the size of the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver

# A repository is a directory holding one of these; they cannot be name components.
_MARKERS = ("_manifests", "_layers")


async def catalog_page(
    driver: StorageDriver, limit: int, last: str | None
) -> tuple[list[str], bool]:
    """Up to ``limit`` repository names after ``last``, and whether more remain."""
    names: list[str] = []
    async for name in _walk(driver, "", last or ""):
        if len(names) == limit:
            return names, True
        names.append(name)
    return names, False


async def _walk(driver: StorageDriver, prefix: str, last: str) -> AsyncIterator[str]:
    directory = f"{paths.REPOSITORIES}/{prefix}".rstrip("/")
    try:
        children = await driver.list_dir(directory)
    except PathNotFound:
        return
    # Entry "a" (the repository itself) sorts before "a-b", but its subtree "a/..."
    # sorts after "a-b": order subtrees by "name/" so the walk yields names in order.
    entries: list[tuple[str, bool]] = []
    for child in children:
        if child.startswith("_") or child.startswith("."):
            continue
        full = f"{prefix}{child}"
        entries.append((full, False))
        entries.append((full + "/", True))
    for key, is_subtree in sorted(entries):
        if is_subtree:
            if key < last and not last.startswith(key):
                continue
            async for name in _walk(driver, key, last):
                yield name
        elif key > last and await _is_repository(driver, key):
            yield key


async def _is_repository(driver: StorageDriver, name: str) -> bool:
    for marker in _MARKERS:
        try:
            await driver.stat(f"{paths.repository(name)}/{marker}")
            return True
        except PathNotFound:
            continue
    return False
