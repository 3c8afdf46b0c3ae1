"""What a stored manifest references, read leniently for garbage collection.

Validation at push time (``manifest_formats``) is strict; collection must instead read
whatever a store holds, including what the reference registry stored (Docker schema 1
``fsLayers``) and media types portside would refuse today, and must never miss a
reference, since a missed reference is a deleted layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.digest import Digest, InvalidDigest, parse_digest


class UnreadableManifest(ValueError):
    """The stored bytes are not a JSON object: nothing can be learned from them."""


@dataclass(frozen=True, slots=True)
class References:
    blobs: frozenset[Digest]  # config, layers, artifact blobs, schema 1 fsLayers
    manifests: frozenset[Digest]  # the children of an index
    subject: Digest | None


def references_of(body: bytes) -> References:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UnreadableManifest("not JSON") from None
    if not isinstance(document, dict):
        raise UnreadableManifest("not a JSON object")
    blobs = set(_digests([document.get("config")]))
    for key in ("layers", "blobs"):
        blobs.update(_digests(document.get(key)))
    blobs.update(_digests(document.get("fsLayers"), key="blobSum"))
    subject = next(iter(_digests([document.get("subject")])), None)
    return References(frozenset(blobs), frozenset(_digests(document.get("manifests"))), subject)


def _digests(items: Any, key: str = "digest") -> list[Digest]:
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            try:
                found.append(parse_digest(item[key]))
            except InvalidDigest:
                continue
    return found
