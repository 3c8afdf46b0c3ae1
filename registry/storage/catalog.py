"""The catalog: repository names in lexical order, one page at a time.

The walk visits directories in the order their names sort as repository names, skips
whole subtrees that sort before ``last``, and stops as soon as the page is full, so a
page costs what it returns rather than the size of the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from registry.storage import paths
from registry.storage.driver.base import PathNotFound, StorageDriver
from shared.reference import MAX_NAME_LENGTH

# A repository is a directory holding one of these.
REPOSITORY_MARKERS = (paths.MANIFESTS, paths.LAYERS)


async def catalog_page(
    driver: StorageDriver, limit: int, last: str | None
) -> tuple[list[str], bool]:
    """Up to ``limit`` repository names after ``last``, and whether more remain."""
    names: list[str] = []
    async for name in repository_names(driver, REPOSITORY_MARKERS, last or ""):
        if len(names) == limit:
            return names, True
        names.append(name)
    return names, False


async def repository_names(
    driver: StorageDriver, markers: Sequence[str], last: str = ""
) -> AsyncIterator[str]:
    """Names after ``last``, in order, of the directories holding one of ``markers``
    (``paths.UPLOADS`` finds repositories with uploads, even before their first blob)."""
    async for name in _walk(driver, "", last, markers):
        yield name


async def _walk(
    driver: StorageDriver, prefix: str, last: str, markers: Sequence[str]
) -> AsyncIterator[str]:
    try:
        children = await driver.list_dir(paths.repository(prefix))
    except PathNotFound:
        return
    # Entry "a" (the repository itself) sorts before "a-b", but its subtree "a/..."
    # sorts after "a-b": order subtrees by "name/" so the walk yields names in order.
    entries: list[tuple[str, bool]] = []
    for child in children:
        if paths.is_data_directory(child):
            continue
        full = f"{prefix}{child}"
        entries.append((full, False))
        entries.append((full + "/", True))
    for key, is_subtree in sorted(entries):
        if len(key) > MAX_NAME_LENGTH:
            continue  # no repository name is this long: not a name (a link loop, say)
        if is_subtree:
            if key < last and not last.startswith(key):
                continue
            async for name in _walk(driver, key, last, markers):
                yield name
        elif key > last and await _holds_any(driver, key, markers):
            yield key


async def _holds_any(driver: StorageDriver, name: str, markers: Sequence[str]) -> bool:
    for marker in markers:
        try:
            await driver.stat(paths.repository_part(name, marker))
            return True
        except PathNotFound:
            continue
    return False
