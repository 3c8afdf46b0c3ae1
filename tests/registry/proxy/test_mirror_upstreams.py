"""Many upstreams in one registry, beside hosted repositories: the reference registry
2.8.2 in token mode behind portside's tokenauth (upstream Bearer auth, tokens cached per
scope), an open upstream (also under a Docker Hub-style ``library/`` mapping), and the
mirror's own token auth deciding on the local names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob, assert_error, push_blob, send
from tests.registry.proxy.conftest import pull
from tests.support.deployments import ISSUER, PASSWORDS, SERVICE
from tests.support.logins import basic
from tests.support.oci import Image, make_image
from tests.support.portside_servers import ServerProcess
from tests.support.tools import require_tool
from tests.support.upstreams import (
    FaultyProxy,
    ReferenceUpstream,
    push_image,
    start_reference_token_upstream,
    start_tokenauth,
)


@dataclass
class Upstreams:
    reference: ReferenceUpstream
    token_proxy: FaultyProxy  # in front of tokenauth: counts token requests
    tokenauth: ServerProcess
    secured: Image  # alice/app:v1 on the reference registry (bob may pull it)


async def bearer_session(tokenauth: ServerProcess, user: str, scope: str) -> aiohttp.ClientSession:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            tokenauth.url + "/auth",
            params={"service": SERVICE, "scope": scope},
            headers=basic(user, PASSWORDS[user]),
        ) as answer,
    ):
        assert answer.status == 200, await answer.text()
        token = (await answer.json())["token"]
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def upstreams(tmp_path: Path) -> AsyncIterator[Upstreams]:
    registry_bin = require_tool("docker-registry")
    directory = tmp_path / "reference"
    directory.mkdir()
    tokenauth = start_tokenauth(directory)
    token_proxy = FaultyProxy(tokenauth.url)
    await token_proxy.start()
    reference = None
    try:
        reference = start_reference_token_upstream(
            registry_bin, directory, tokenauth, token_proxy.url + "/auth"
        )
        image = make_image(layer_count=2, layer_size=128 * 1024, seed="secured")
        async with await bearer_session(tokenauth, "alice", "repository:alice/app:pull,push") as s:
            await push_image(s, reference.url, "alice/app", "v1", image)
        token_proxy.counts.clear()
        yield Upstreams(reference, token_proxy, tokenauth, image)
    finally:
        if reference is not None:
            reference.stop()
        else:
            tokenauth.stop()
        await token_proxy.close()


def upstreams_env(upstreams: Upstreams, open_url: str) -> dict[str, str]:
    config = [
        {
            "prefix": "ref",
            "remoteurl": upstreams.reference.url,
            "username": "bob",
            "password": PASSWORDS["bob"],
        },
        {"prefix": "open", "remoteurl": open_url},
        {"prefix": "hub", "remoteurl": open_url, "library": True},
    ]
    return {"REGISTRY_PROXY_UPSTREAMS": json.dumps(config)}


async def test_many_upstreams_beside_hosted_repositories(
    make_registry: ClientFactory,
    upstreams: Upstreams,
    open_upstream: ServerProcess,
    image: Image,
) -> None:
    mirror = await make_registry(upstreams_env(upstreams, open_upstream.url))
    await pull(mirror, "ref/alice/app", "v1", upstreams.secured)
    await pull(mirror, "open/library/app", "v1", image)
    await pull(mirror, "hub/app", "v1", image)  # hub/app is library/app upstream
    # Bob's token for alice/app was asked for once and reused for every request.
    token_requests = sum(upstreams.token_proxy.counts.values())
    assert token_requests == 1, upstreams.token_proxy.counts
    # Hosted repositories take pushes; mirrored ones do not.
    blob = Blob(b"hosted layer")
    assert (await push_blob(mirror, "mine/app", blob)).status == 201
    refused = await send(mirror, "POST", "/v2/ref/alice/app/blobs/uploads/")
    assert_error(refused, 405, "UNSUPPORTED")
    # A prefix alone, or a name under no prefix, is hosted: nothing is asked upstream.
    missing = await send(mirror, "GET", "/v2/elsewhere/app/manifests/v1")
    assert_error(missing, 404, "MANIFEST_UNKNOWN")


async def test_the_upstream_s_credentials_are_needed(
    make_registry: ClientFactory, upstreams: Upstreams, open_upstream: ServerProcess
) -> None:
    env = {
        "REGISTRY_PROXY_REMOTEURL": upstreams.reference.url,
        "REGISTRY_PROXY_USERNAME": "bob",
        "REGISTRY_PROXY_PASSWORD": "not-bob-s-password",
    }
    mirror = await make_registry(env)
    refused = await send(mirror, "GET", "/v2/alice/app/manifests/v1")
    assert_error(refused, 503, "UNAVAILABLE")
    assert "not-bob-s-password" not in refused.body.decode()


async def test_the_mirror_s_acl_decides_on_local_names(
    make_registry: ClientFactory,
    upstreams: Upstreams,
    open_upstream: ServerProcess,
    tmp_path: Path,
) -> None:
    tokenauth = upstreams.tokenauth
    env = upstreams_env(upstreams, open_upstream.url) | {
        "REGISTRY_AUTH": "token",
        "REGISTRY_AUTH_TOKEN_REALM": tokenauth.url + "/auth",
        "REGISTRY_AUTH_TOKEN_SERVICE": SERVICE,
        "REGISTRY_AUTH_TOKEN_ISSUER": ISSUER,
        "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": str(tmp_path / "reference" / "token.crt"),
    }
    mirror: RegistryClient = await make_registry(env)
    anonymous = await send(mirror, "GET", "/v2/ref/alice/app/manifests/v1")
    assert anonymous.status == 401
    # admin may pull everything; bob may pull alice/* upstream but nothing under ref/.
    async with await bearer_session(tokenauth, "bob", "repository:ref/alice/app:pull") as s:
        denied = await s.get(str(mirror.make_url("/v2/ref/alice/app/manifests/v1")))
        assert denied.status == 401
    async with await bearer_session(tokenauth, "admin", "repository:ref/alice/app:pull") as s:
        allowed = await s.get(str(mirror.make_url("/v2/ref/alice/app/manifests/v1")))
        assert allowed.status == 200
        assert await allowed.read() == upstreams.secured.manifest
