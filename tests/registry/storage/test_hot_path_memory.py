"""What the pull path keeps between requests stays correct and bounded: the repository
views ``Registry.repository`` reuses, and the digests ``parse_digest`` remembers."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.oci.digest import PARSED_DIGESTS, InvalidDigest, parse_digest
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.registry import MAX_REPOSITORY_VIEWS, Registry


def test_repository_views_are_reused_and_bounded(tmp_path: Path) -> None:
    registry = Registry(FilesystemDriver(tmp_path))
    first = registry.repository("alice/app")
    assert registry.repository("alice/app") is first
    assert first.name == first.tags.name == first.manifests.name == "alice/app"
    for n in range(MAX_REPOSITORY_VIEWS + 10):  # names are the clients' to choose
        assert registry.repository(f"team/app{n}").name == f"team/app{n}"
    assert len(registry._views) == MAX_REPOSITORY_VIEWS
    again = registry.repository("alice/app")  # pushed out, made anew: still the same data
    assert again is not first and again.name == "alice/app"


def test_only_valid_digests_are_remembered() -> None:
    text = "sha256:" + "ab" * 32
    assert parse_digest(text) is parse_digest(text)
    before = parse_digest.cache_info().currsize
    for _ in range(3):  # a failure is raised every time, never cached
        with pytest.raises(InvalidDigest):
            parse_digest("sha256:" + "AB" * 32)
    assert parse_digest.cache_info().currsize == before
    assert parse_digest.cache_info().maxsize == PARSED_DIGESTS
