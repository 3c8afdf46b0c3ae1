"""Writing a store straight in Distribution's on-disk layout, which both registries read.

Seeding 10,000 tags through the API would take longer than measuring them; the layout is
the one both registries write (``docker/registry/v2/{blobs,repositories}``), so a seeded
store is what a registry that had received those pushes would hold. Every tag points at
one small image whose config, layer and manifest blobs are stored once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.data import sha256_digest, small_image


@dataclass(frozen=True)
class SeededStore:
    repositories: list[str]  # sorted, as a catalog lists them
    tagged: str  # the repository holding ``tags``
    tags: list[str]  # sorted


def repository_names(count: int) -> list[str]:
    """``org00/repo0000`` …: a hundred repositories per organisation, as many stores have."""
    return sorted(f"org{index // 100:02d}/repo{index:04d}" for index in range(count))


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def seed_store(root: Path, repositories: int, tags: int) -> SeededStore:
    """``repositories`` repositories with one tag each, except the first, with ``tags``."""
    v2 = root / "docker/registry/v2"
    image = small_image("seed", bytes(1024), layer_count=1)
    manifest_digest = sha256_digest(image.manifest)
    contents = [*image.layers, image.config, (image.manifest, manifest_digest)]
    for data, digest in contents:
        hex_digest = digest.split(":", 1)[1]
        blob_dir = v2 / "blobs/sha256" / hex_digest[:2] / hex_digest
        blob_dir.mkdir(parents=True, exist_ok=True)
        (blob_dir / "data").write_bytes(data)
    names = repository_names(repositories)
    tag_names = sorted(f"v{index:05d}" for index in range(tags))
    manifest_hex = manifest_digest.split(":", 1)[1]
    for name in names:
        repo = v2 / "repositories" / name
        for _, digest in [*image.layers, image.config]:
            _link(repo / "_layers/sha256" / digest.split(":", 1)[1], digest)
        _link(repo / "_manifests/revisions/sha256" / manifest_hex, manifest_digest)
        for tag in tag_names if name == names[0] else ["latest"]:
            tag_dir = repo / "_manifests/tags" / tag
            _link(tag_dir / "current", manifest_digest)
            _link(tag_dir / "index/sha256" / manifest_hex, manifest_digest)
    return SeededStore(names, names[0], tag_names)
