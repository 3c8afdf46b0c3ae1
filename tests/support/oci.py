"""Small, real OCI images built in a test: blobs, manifests and on-disk OCI layouts.

Clients such as skopeo read an OCI image layout (``oci:DIR:TAG``); these helpers make one
with real gzip-compressed tar layers so an end-to-end push and pull moves genuine bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """An image as bytes: config, layers and the manifest that ties them."""

    config: bytes
    layers: list[bytes]
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)


def make_layer(files: dict[str, bytes]) -> bytes:
    """A gzip-compressed tar with the given files, byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_image(layer_count: int = 3, layer_size: int = 64 * 1024, seed: str = "portside") -> Image:
    """A multi-layer OCI image whose layers hold pseudo-random, incompressible files."""
    layers = []
    diff_ids = []
    for index in range(layer_count):
        content = _pseudo_random(f"{seed}-{index}", layer_size)
        layer = make_layer({f"layer{index}/data.bin": content})
        layers.append(layer)
        diff_ids.append(sha256_digest(gzip.decompress(layer)))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(b), "size": len(b)}
                for b in layers
            ],
        },
        indent=2,
    ).encode()
    blobs = {sha256_digest(b): b for b in [config, *layers]}
    return Image(config=config, layers=layers, manifest=manifest, blobs=blobs)


def write_oci_layout(directory: Path, image: Image, tag: str = "latest") -> None:
    """Write ``image`` as an OCI image layout that ``skopeo copy oci:DIR:TAG`` reads."""
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for digest, data in {**image.blobs, image.manifest_digest: image.manifest}.items():
        (blob_dir / digest.split(":", 1)[1]).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))


def read_oci_layout(directory: Path) -> dict[str, bytes]:
    """Every blob of a layout, by digest: to compare a pulled image byte for byte."""
    blob_dir = directory / "blobs" / "sha256"
    return {"sha256:" + name: (blob_dir / name).read_bytes() for name in os.listdir(blob_dir)}


def _pseudo_random(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])
