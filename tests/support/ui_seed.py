"""A registry's storage seeded for the web interface's tests, through the storage facade.

Written before the registry starts, as a registry writes it: single-platform images with
a full config (entrypoint, env, labels, history), a multi-platform index, and referrers
(a signature and an SBOM of an image, and a signature of that SBOM).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.config import load_config
from registry.oci.digest import parse_digest
from registry.storage.registry import Registry, Repository
from registry.wiring import create_storage
from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, make_layer
from tests.support.oci import sha256_digest as digest_of

EMPTY_JSON = "application/vnd.oci.empty.v1+json"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_TYPE = "application/spdx+json"


@dataclass
class Seeded:
    """What a seeding wrote: manifest digests by ``repository:tag``, referrer digests."""

    digests: dict[str, str] = field(default_factory=dict)
    referrers: dict[str, str] = field(default_factory=dict)


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True).encode()


def _descriptor(media_type: str, body: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(body), "size": len(body), **extra}


async def _blob(repo: Repository, body: bytes) -> None:
    digest = parse_digest(digest_of(body))
    await repo.blobs.store.put(digest, body)
    await repo.blobs.link(digest)


async def _manifest(repo: Repository, reference: str, body: bytes, media_type: str) -> str:
    ref = parse_digest(reference) if ":" in reference else reference
    stored, _ = await repo.manifests.put(ref, body, media_type)
    return str(stored.digest)


async def _image(repo: Repository, tag: str, seed: str, architecture: str = "amd64") -> str:
    layer = make_layer({f"{seed}/hello.txt": f"hello from {seed}\n".encode()})
    config = _json(
        {
            "architecture": architecture,
            "os": "linux",
            "created": "2026-11-01T12:00:00Z",
            "config": {
                "Entrypoint": ["/bin/hello"],
                "Cmd": ["--greet", seed],
                "Env": ["PATH=/usr/bin", f"SEED={seed}"],
                "Labels": {"org.opencontainers.image.title": seed},
            },
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
            "history": [
                {"created": "2026-11-01T12:00:00Z", "created_by": f"COPY {seed}/hello.txt /"},
                {
                    "created": "2026-11-01T12:00:00Z",
                    "created_by": "ENTRYPOINT",
                    "empty_layer": True,
                },
            ],
        }
    )
    for blob in (layer, config):
        await _blob(repo, blob)
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER_GZIP, layer)],
        }
    )
    return await _manifest(repo, tag, manifest, OCI_MANIFEST)


async def _artifact(
    repo: Repository, subject: str, subject_size: int, artifact_type: str, content: bytes
) -> str:
    empty = b"{}"
    await _blob(repo, empty)
    await _blob(repo, content)
    body = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": _descriptor(EMPTY_JSON, empty),
            "layers": [_descriptor(artifact_type, content)],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {"org.opencontainers.image.created": "2026-11-02T00:00:00Z"},
        }
    )
    return await _manifest(repo, digest_of(body), body, OCI_MANIFEST)


def _storage(root: Path) -> Registry:
    # No fsync: a test's scratch store need not survive a power loss, and seeding is quicker.
    environ = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
        "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false",
    }
    return create_storage(load_config(None, environ))


async def _seed(root: Path, names: list[str]) -> Seeded:
    storage = _storage(root)
    seeded = Seeded()
    try:
        for name in names:
            repo = storage.repository(name)
            for tag in ("1.0", "latest"):
                seeded.digests[f"{name}:{tag}"] = await _image(repo, tag, f"{name}-{tag}")
        # A multi-platform index, and referrers of the first image.
        repo = storage.repository(names[0])
        children = []
        for arch in ("amd64", "arm64"):
            digest = await _image(repo, f"multi-{arch}", f"multi-{arch}", arch)
            stored = await repo.manifests.get(parse_digest(digest))
            children.append(
                {
                    **_descriptor(OCI_MANIFEST, stored.body),
                    "platform": {"os": "linux", "architecture": arch},
                }
            )
        index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
        seeded.digests[f"{names[0]}:multi"] = await _manifest(repo, "multi", index, OCI_INDEX)
        image = seeded.digests[f"{names[0]}:1.0"]
        size = len((await repo.manifests.get(parse_digest(image))).body)
        sbom = await _artifact(repo, image, size, SBOM_TYPE, b'{"spdxVersion": "SPDX-2.3"}')
        seeded.referrers["sbom"] = sbom
        seeded.referrers["signature"] = await _artifact(
            repo, image, size, SIGNATURE_TYPE, b"image signature"
        )
        sbom_size = len((await repo.manifests.get(parse_digest(sbom))).body)
        seeded.referrers["sbom-signature"] = await _artifact(
            repo, sbom, sbom_size, SIGNATURE_TYPE, b"sbom signature"
        )
    finally:
        await storage.close()
    return seeded


def seed_storage(root: Path, names: list[str]) -> Seeded:
    """Seed ``root`` (filesystem storage) with images in each of ``names``; the first also
    gets the index and the referrers."""
    return asyncio.run(_seed(root, names))


async def _seed_repositories(root: Path, names: list[str]) -> None:
    storage = _storage(root)
    try:
        for name in names:
            await _image(storage.repository(name), "latest", "many")
    finally:
        await storage.close()


def seed_repositories(root: Path, names: list[str]) -> None:
    """One small image (``latest``) in each of ``names``: a registry of many repositories."""
    asyncio.run(_seed_repositories(root, names))
