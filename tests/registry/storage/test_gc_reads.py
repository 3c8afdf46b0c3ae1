"""What a collection costs before its first deletion (reading the repositories, marking,
the online protocol's reads), kept from coming back: counted, not timed, since the
machine is shared. The store is the bench's (``bench/scenarios/gc.py``), one repository
of it: 100 manifests, two in five untagged, written two days ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from pathlib import Path

import pytest

from bench.scenarios.gc import PER_REPOSITORY, seed_gc_store
from registry.oci import digest
from registry.storage.driver import filesystem
from registry.storage.driver.base import FileInfo
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.gc import CollectionReport, GarbageCollector
from registry.storage.registry import Registry


async def _collect(root: Path, *, grace: float) -> CollectionReport:
    driver = FilesystemDriver(root, fsync=False)
    try:
        return await GarbageCollector(Registry(driver), delete_untagged=True, grace=grace).run()
    finally:
        await driver.close()


@pytest.fixture
async def store(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    await asyncio.to_thread(seed_gc_store, root, PER_REPOSITORY)
    return root


async def test_the_online_reads_of_lastref_are_not_one_stat_each(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online protocol reads the ``lastref`` of every unmarked blob twice and of
    every untagged manifest twice: 48,000 ``stat`` coroutines on the bench's store,
    about 25 us each. They are now bulk reads of the driver's (``modified_many``),
    one ``os.stat`` each in a thread."""
    stats = 0
    stat = FilesystemDriver.stat

    async def counting(driver: FilesystemDriver, path: str) -> FileInfo:
        nonlocal stats
        stats += 1
        return await stat(driver, path)

    monkeypatch.setattr(FilesystemDriver, "stat", counting)
    report = await _collect(store, grace=3600)
    unmarked = PER_REPOSITORY * 2 // 5 * 5  # 40 untagged manifests and their 4 blobs each
    assert len(report.blobs) == unmarked  # the protocol ran in full and condemned them
    assert stats < 20  # a few of the run's own files (its clock, lease, record)


class _CountingPattern:
    """A compiled pattern whose full matches are counted."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.calls = 0

    def fullmatch(self, text: str) -> re.Match[str] | None:
        self.calls += 1
        return self.pattern.fullmatch(text)


async def test_a_sha256_digest_is_parsed_with_one_match(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection parses every blob, link and reference of the store (140,000 on the
    bench's store), each a miss of the parsed-digest cache: the general grammar, a split
    and a hex check each time. A sha256 digest is now decided by one match, and the
    others still go the general way (and are refused as before)."""
    grammar = _CountingPattern(digest._DIGEST_GRAMMAR)
    monkeypatch.setattr(digest, "_DIGEST_GRAMMAR", grammar)
    digest.parse_digest.cache_clear()
    report = await _collect(store, grace=0)
    assert len(report.blobs) == PER_REPOSITORY * 2 // 5 * 5
    assert grammar.calls == 0
    sha512 = "sha512:" + "ab" * 64
    assert str(digest.parse_digest(sha512)) == sha512
    for wrong in ("sha256:" + "AB" * 32, "sha256:" + "ab" * 31, "sha256:" + "ab" * 32 + "\n"):
        with pytest.raises(digest.InvalidDigest):
            digest.parse_digest(wrong)
    assert grammar.calls == 4


def test_digests_equal_as_values_hash_alike() -> None:
    """The hash is the hex's (cached by the string) instead of a tuple built per lookup;
    equal digests must still hash alike and stay one key."""
    text = "sha256:" + "cd" * 32
    first = digest.parse_digest(text)
    digest.parse_digest.cache_clear()
    second = digest.parse_digest(text)
    assert first is not second and first == second
    assert {first: 1, second: 2} == {first: 2}
    assert first != digest.Digest("sha512", "cd" * 32)


async def test_marking_builds_no_text_when_nothing_is_printed(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--quiet`` printed nothing but still built every line (a manifest and each of its
    blobs marked: 50,000 strings on the bench's store) and sorted each manifest's
    references by their text for the lines' order. Marking now formats no digest when
    no line is wanted; with lines, they are as before."""
    formatted_by: dict[str, int] = {}
    text_of = digest.Digest.__str__

    def counting(value: digest.Digest) -> str:
        caller = sys._getframe(1).f_code.co_name
        formatted_by[caller] = formatted_by.get(caller, 0) + 1
        return text_of(value)

    monkeypatch.setattr(digest.Digest, "__str__", counting)
    report = await _collect(store, grace=3600)
    assert len(report.blobs) == PER_REPOSITORY * 2 // 5 * 5
    assert formatted_by.get("_mark_manifest", 0) == 0


async def test_the_names_of_a_listing_are_parsed_together(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every blob, revision, layer link and tag-history entry comes from a directory
    listing (112,000 names on the bench's store), each once parsed alone by
    ``parse_digest``. A listing of sha256 names is now checked by one match over all of
    it, so only what is read from files goes one digest at a time: the manifests'
    references (a config and three layers each) and the tags' current links."""
    one = _CountingPattern(digest._SHA256)
    monkeypatch.setattr(digest, "_SHA256", one)
    digest.parse_digest.cache_clear()
    report = await _collect(store, grace=0)
    assert len(report.blobs) == PER_REPOSITORY * 2 // 5 * 5
    tags = PER_REPOSITORY * 3 // 5
    assert one.calls == PER_REPOSITORY * 4 + tags


def test_a_listing_parses_as_its_names_one_by_one() -> None:
    """Names that are not digests (a killed writer's temporary, upper-case hex, a wrong
    length, a slash) are passed over exactly as ``parse_digest`` of each would."""
    good = ["ab" * 32, "0f" * 32]
    listings = [
        [],
        good,
        [*good, ".tmp-link-1234"],
        ["AB" * 32, *good],
        ["ab" * 31, *good],
        ["ab" * 32 + "/" + "cd" * 32, *good],  # never from a listing, refused all the same
        [f"{good[0]}/{good[1][:-1]}", "x"],  # a slash and a short name: the same length
    ]
    for names in listings:
        for algorithm in ("sha256", "sha512"):
            expected = []
            for name in names:
                with contextlib.suppress(digest.InvalidDigest):
                    expected.append(digest.parse_digest(f"{algorithm}:{name}"))
            assert digest.parse_names(algorithm, names) == expected, (algorithm, names)
    sha512 = ["cd" * 64, "not-one"]
    assert digest.parse_names("sha512", sha512) == [digest.Digest("sha512", "cd" * 64)]


async def test_the_storage_layer_s_paths_are_joined_not_split(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filesystem driver turned each path into a local one by splitting it and
    checking every part (117,000 paths in a collection of the bench's store). The
    storage layer's own paths (absolute, no empty, "." or ".." part) are now joined to
    the root as they are; any other path still goes the general way, with the same
    result."""
    splits = 0

    def counting(function: None, parts: list[str]) -> filter[str]:
        nonlocal splits
        splits += 1
        return filter(function, parts)

    monkeypatch.setattr(filesystem, "filter", counting, raising=False)
    report = await _collect(store, grace=3600)
    assert len(report.blobs) == PER_REPOSITORY * 2 // 5 * 5
    assert splits == 0
    driver = FilesystemDriver(store, fsync=False)
    try:
        root = str(store)
        assert driver._os_path("/docker/registry/v2/blobs") == f"{root}/docker/registry/v2/blobs"
        assert driver._os_path("docker//registry/v2/") == f"{root}/docker/registry/v2"
        assert driver._os_path("/a/.hidden/b") == f"{root}/a/.hidden/b"
        for refused in ("/a/../b", "/a/./b", "/..", "../a"):
            with pytest.raises(ValueError):
                driver._os_path(refused)
        assert splits == 6  # all but the first: not the storage layer's own shape
    finally:
        await driver.close()
