"""Foreign (non-distributable) layers: not required in the repository, but their URLs
must satisfy ``validation.manifests.urls``."""

from __future__ import annotations

import json

from tests.registry.conftest import ClientFactory, RegistryClient
from tests.support.oci import OCI_MANIFEST, make_image, sha256_digest

FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


async def push_with_foreign_layer(client: RegistryClient, url: str | None) -> int:
    image = make_image(layer_count=1, layer_size=1024, seed="foreign")
    for digest, content in image.blobs.items():
        await client.post("/v2/win/app/blobs/uploads/", params={"digest": digest}, data=content)
    manifest = json.loads(image.manifest)
    layer: dict[str, object] = {
        "mediaType": FOREIGN,
        "digest": sha256_digest(b"never pushed"),
        "size": 12,
    }
    if url is not None:
        layer["urls"] = [url]
    manifest["layers"].insert(0, layer)
    response = await client.put(
        "/v2/win/app/manifests/v1",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": OCI_MANIFEST},
    )
    return response.status


async def test_foreign_layers_need_not_be_pushed(registry: RegistryClient) -> None:
    assert await push_with_foreign_layer(registry, "https://mcr.example/layer.tgz") == 201
    assert await push_with_foreign_layer(registry, None) == 400


async def test_url_rules_allow_and_deny(make_registry: ClientFactory) -> None:
    client = await make_registry(
        {
            "REGISTRY_VALIDATION_MANIFESTS_URLS_ALLOW": r"['^https://mcr\.example/']",
            "REGISTRY_VALIDATION_MANIFESTS_URLS_DENY": "['/private/']",
        }
    )
    assert await push_with_foreign_layer(client, "https://mcr.example/layer.tgz") == 201
    assert await push_with_foreign_layer(client, "https://elsewhere.example/l.tgz") == 400
    assert await push_with_foreign_layer(client, "https://mcr.example/private/l.tgz") == 400
