"""Content digests (``algorithm:encoded``): parsing, validation and incremental hashing.

Only algorithms a registry can verify are accepted, and the encoded part must have the
exact length and alphabet of that algorithm, so a digest is always safe to use as a path
component.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# The algorithms registries verify (OCI image-spec "Registered algorithms" + sha384,
# which Distribution also accepts), with the hex length of their encoded part.
HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX = re.compile(r"[0-9a-f]+")
# Nearly every digest: one match decides it (garbage collection parses every blob, link
# and reference of a store, 140,000 on the bench's, each one a miss of the cache below).
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
# A whole listing of sha256 names, each followed by a slash (no file name holds one).
_SHA256_NAMES = re.compile(r"(?:[0-9a-f]{64}/)*")


class InvalidDigest(ValueError):
    """A string that is not a digest this registry can verify."""


class Hasher(Protocol):
    @property
    def name(self) -> str: ...
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hasher: ...


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def __hash__(self) -> int:
        # Equal digests have equal hex: its hash is cached by the string, where the
        # generated one built a tuple of both fields on every set or dict lookup.
        # Keys by hex: the maps every request looks digests up in (blob descriptors and
        # links, manifest bodies, blob refreshes) key them by ``digest.hex`` itself, which
        # names a digest alone (each algorithm has its own length, HEX_LENGTHS): a str
        # hashes in C, where this method is a Python call at every lookup (four per
        # blob HEAD).
        return hash(self.hex)

    def hasher(self) -> Hasher:
        return new_hasher(self.algorithm)


# The same few digests are parsed on every pull (the URL's, a tag link's): the valid ones
# are remembered (a Digest is immutable; failures are never cached, and the key is at
# most 200 characters, so the memory stays small whatever clients send).
PARSED_DIGESTS = 4096


@functools.lru_cache(maxsize=PARSED_DIGESTS)
def parse_digest(text: str) -> Digest:
    """Parse and validate ``text``; raise InvalidDigest with a reason otherwise."""
    if _SHA256.fullmatch(text):
        return Digest("sha256", text[7:])
    if len(text) > 200 or not _DIGEST_GRAMMAR.fullmatch(text):
        raise InvalidDigest(f"invalid digest format: {text[:80]!r}")
    algorithm, encoded = text.split(":", 1)
    expected = HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidDigest(f"unsupported digest algorithm: {algorithm[:20]!r}")
    if len(encoded) != expected or not _LOWER_HEX.fullmatch(encoded):
        raise InvalidDigest(f"invalid {algorithm} digest: {encoded[:80]!r}")
    return Digest(algorithm, encoded)


def parse_names(algorithm: str, names: Sequence[str]) -> list[Digest]:
    """The digests ``algorithm:name`` of a directory's ``names`` (a link or blob
    directory's listing), in order, passing over the names that are not one (a killed
    writer's temporary file).

    A listing of sha256 names is checked by one match over all of it: a collection
    parses every blob and link of a store this way (112,000 names on the bench's store),
    where ``parse_digest`` spent a cache lookup, a match and a slice on each.
    """
    if algorithm == "sha256" and names:
        joined = "/".join(names) + "/"
        # The length rules out a name holding a slash (never from a listing): then every
        # name is exactly one of the 64-digit pieces the match checked.
        if len(joined) == 65 * len(names) and _SHA256_NAMES.fullmatch(joined):
            return [Digest("sha256", name) for name in names]
    digests = []
    for name in names:
        try:
            digests.append(parse_digest(f"{algorithm}:{name}"))
        except InvalidDigest:
            continue
    return digests


def new_hasher(algorithm: str) -> Hasher:
    if algorithm not in HEX_LENGTHS:
        raise InvalidDigest(f"unsupported digest algorithm: {algorithm!r}")
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return Digest(algorithm, hasher.hexdigest())
