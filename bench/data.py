"""Test data: large blob files written in pieces, and small images built in memory."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from bench.client import image_manifest

_PIECE = 16 * 1024 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class BlobFile:
    path: Path
    size: int
    digest: str


def write_blob_file(path: Path, size: int, seed: int = 0) -> BlobFile:
    """``size`` pseudo-random bytes (reproducible) and their digest.

    Written piece by piece, so memory stays at one piece whatever the size.
    """
    # One random piece, each copy made unique by its index: generating every byte at random
    # would take longer than the pushes themselves.
    base = random.Random(seed).randbytes(_PIECE)  # test data, not secrets
    hasher = hashlib.sha256()
    with path.open("wb") as file:
        remaining, index = size, 0
        while remaining > 0:
            piece = (index.to_bytes(16, "big") + base[16:])[: min(_PIECE, remaining)]
            index += 1
            hasher.update(piece)
            file.write(piece)
            remaining -= len(piece)
    return BlobFile(path, size, f"sha256:{hasher.hexdigest()}")


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class SmallImage:
    """Layers and a config as (data, digest), and the manifest naming them."""

    layers: list[tuple[bytes, str]]
    config: tuple[bytes, str]
    manifest: bytes


def small_image(label: str, base: bytes, layer_count: int = 3) -> SmallImage:
    """An image whose layers are ``base`` with a unique head, so no two images share one."""
    layers = []
    for index in range(layer_count):
        head = f"{label}/layer{index}/".encode().ljust(64, b".")
        data = head + base[len(head) :]
        layers.append((data, sha256_digest(data)))
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest for _, digest in layers]},
        "config": {"Labels": {"bench": label}},
    }
    config_data = json.dumps(config_doc).encode()
    config = (config_data, sha256_digest(config_data))
    return SmallImage(layers, config, image_manifest(config, layers))
