"""What a stored manifest references, read leniently for garbage collection.

Validation at push time (``manifest_formats``) is strict; collection must instead read
whatever a store holds, including what the reference registry stored (Docker schema 1
``fsLayers``) and media types portside would refuse today, and must never miss a
reference, since a missed reference is a deleted layer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from registry.oci.digest import Digest, InvalidDigest, parse_digest


class UnreadableManifest(ValueError):
    """The stored bytes are not a JSON object: nothing can be learned from them."""


@dataclass(frozen=True, slots=True)
class References:
    blobs: frozenset[Digest]  # config, layers, artifact blobs, schema 1 fsLayers
    manifests: frozenset[Digest]  # the children of an index
    subject: Digest | None


_ANY_DIGEST = re.compile(rb"sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128}")


def references_of(body: bytes) -> References:
    """What ``body`` names. Bytes Go's decoder reads but Python's does not (invalid UTF-8
    in a string, nesting past Python's recursion limit) are still read: with invalid
    bytes replaced as Go does, or else by ``every_digest_in``, which errs towards keeping.
    UnreadableManifest only for bytes that are not a JSON object at all."""
    try:
        document = json.loads(body.decode("utf-8", errors="replace"))
    except RecursionError:
        return every_digest_in(body)
    except ValueError:
        raise UnreadableManifest("not JSON") from None
    if not isinstance(document, dict):
        raise UnreadableManifest("not a JSON object")
    blobs = set(_digests([document.get("config")]))
    for key in ("layers", "blobs"):
        blobs.update(_digests(document.get(key)))
    blobs.update(_digests(document.get("fsLayers"), key="blobSum"))
    subject = next(iter(_digests([document.get("subject")])), None)
    return References(frozenset(blobs), frozenset(_digests(document.get("manifests"))), subject)


def every_digest_in(body: bytes) -> References:
    """Every digest written anywhere in ``body``, each taken as a blob and as a possible
    child manifest: what cannot be parsed is kept whole rather than half-read."""
    found = frozenset(parse_digest(m.decode()) for m in _ANY_DIGEST.findall(body))
    return References(found, found, None)


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
