"""Repository names and tags: the distribution-spec grammar, and nothing looser.

The one definition of a repository name for both services: the registry checks names
with it, and the scope grammar (``shared.scope``) builds on it.

A name that passes ``is_valid_name`` has only ``[a-z0-9._-]`` components separated by
single slashes, so it can never climb out of a storage directory.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 255
MAX_TAG_LENGTH = 128
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# path-component ['/' path-component]*, as a pattern other grammars embed.
NAME_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
NAME_GRAMMAR = re.compile(NAME_PATTERN)
TAG_GRAMMAR = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and NAME_GRAMMAR.fullmatch(name) is not None


def is_valid_tag(tag: str) -> bool:
    return TAG_GRAMMAR.fullmatch(tag) is not None
