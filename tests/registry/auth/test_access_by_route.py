"""The access check follows the route the request reaches, not the look of its path.

Regression: a path that merely *ended* in ``/v2`` (a tag named ``v2``!) was taken for the
base endpoint ``/v2/``, which needs no scope, so any valid token — even an anonymous one
with no access at all — could read and overwrite ``<name>:v2`` in every repository.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from yarl import URL

from shared.scope import Scope
from shared.token import Claims, TokenSigner
from tests.registry.auth.conftest import ISSUER, SERVICE
from tests.registry.conftest import RegistryClient

CONFIG_BLOB = b"{}"
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG_BLOB).hexdigest()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": CONFIG_DIGEST,
            "size": len(CONFIG_BLOB),
        },
        "layers": [],
    }
).encode()


def bearer(signer: TokenSigner, *access: Scope) -> dict[str, str]:
    claims = Claims.issue(
        issuer=ISSUER,
        subject="someone",
        audience=SERVICE,
        lifetime=timedelta(minutes=5),
        access=access,
    )
    return {"Authorization": f"Bearer {signer.sign(claims)}"}


@pytest.mark.parametrize("tag", ["v2", "v1"])
async def test_a_tag_named_v2_needs_the_repository_scope(
    registry_token: RegistryClient, signer: TokenSigner, tag: str
) -> None:
    owner = bearer(signer, Scope.of("repository", "alice/app", ["pull", "push"]))
    pushed = await registry_token.post(
        "/v2/alice/app/blobs/uploads/",
        params={"digest": CONFIG_DIGEST},
        data=CONFIG_BLOB,
        headers=owner,
    )
    assert pushed.status == 201
    path = f"/v2/alice/app/manifests/{tag}"
    put = {"Content-Type": OCI_MANIFEST}
    assert (await registry_token.put(path, data=MANIFEST, headers={**owner, **put})).status == 201

    nobody = bearer(signer)  # what a token server hands an anonymous caller: no access
    overwrite = await registry_token.put(path, data=MANIFEST, headers={**nobody, **put})
    assert overwrite.status == 401
    assert 'scope="repository:alice/app:pull,push"' in overwrite.headers["WWW-Authenticate"]
    read = await registry_token.get(path, headers=nobody)
    assert read.status == 401
    assert 'error="insufficient_scope"' in read.headers["WWW-Authenticate"]
    assert (await registry_token.get(path, headers=owner)).status == 200


async def test_the_base_endpoint_still_needs_only_a_valid_caller(
    registry_token: RegistryClient, signer: TokenSigner
) -> None:
    base = str(registry_token.make_url("/")).rstrip("/")
    # "/%762/" (sent as is: yarl would otherwise decode it) is routed like "/v2/".
    for path in ("/v2/", "/v2", "/%762/"):
        url = URL(base + path, encoded=True)
        async with registry_token.session.get(url) as response:
            assert response.status == 401, path
        async with registry_token.session.get(url, headers=bearer(signer)) as response:
            assert response.status == 200, path
    assert (await registry_token.get("/")).status == 200


async def test_percent_encoded_api_prefix_is_not_an_endpoint(registry: RegistryClient) -> None:
    response = await registry.get(URL("/%762/library/app/tags/list", encoded=True))
    assert response.status == 404
    assert (await response.json())["errors"][0]["code"] == "UNSUPPORTED"
