"""Which repositories a retention policy's ``repositories`` globs govern."""

from __future__ import annotations

import pytest

from registry.storage.retention import RetentionPolicy


@pytest.mark.parametrize(
    ("pattern", "name", "governed"),
    [
        ("team/*", "team/a", True),
        ("team/*", "team/a/b", False),
        ("team/**", "team/a/b", True),
        ("team/**", "other/a", False),
        ("a/**/b", "a/b", True),  # ** as a whole component also stands for none
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("**/cache", "cache", True),
        ("**/cache", "x/y/cache", True),
        ("**/cache", "x/mycache", False),
        ("a**b", "a/x/b", True),  # inside a component, ** crosses separators as before
        ("ci-?", "ci-1", True),
        ("ci-?", "ci-12", False),
        ("a.b", "axb", False),  # everything else is literal
    ],
)
def test_repository_globs(pattern: str, name: str, governed: bool) -> None:
    assert RetentionPolicy(repositories=(pattern,)).governs(name) is governed
