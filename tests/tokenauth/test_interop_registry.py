"""Interoperability with a real peer: Debian's reference registry 2.8.2 trusting tokenauth.

A user with push rights pushes an image through skopeo; a pull-only user is refused on push
and pulls the image back byte for byte. The registry verifies our tokens' ``x5c`` chains
against its ``rootcertbundle``, as every registry 2.x deployment does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.oci import make_image, read_oci_layout, write_oci_layout
from tests.support.tools import free_port, require_tool
from tests.tokenauth.conftest import ISSUER, SERVICE, Setup
from tokenauth.app import create_app
from tokenauth.config import load_config
from tokenauth.keygen import certificate_pem, generate_key, key_pem, self_signed_certificate

INTEROP_ACL = """\
acl:
  - match: {account: alice, name: "team/*"}
    actions: [pull, push]
    comment: alice publishes team images
  - match: {account: bob, name: "team/*"}
    actions: [pull]
    comment: bob may only pull them
  - match: {account: "", name: "team/*"}
    actions: [pull]
    comment: and so may anonymous clients
"""


@dataclass
class Peer:
    """The running reference registry and an isolated skopeo."""

    url: str
    skopeo: str
    env: dict[str, str]

    async def skopeo_copy(self, *args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            self.skopeo,
            "--insecure-policy",
            "copy",
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode or 0, output.decode(errors="replace")


@pytest.fixture(params=["ES256", "RS256"])
async def peer(
    request: pytest.FixtureRequest,
    setup: Setup,
    tmp_path: Path,
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> AsyncIterator[Peer]:
    registry_bin, skopeo = require_tool("docker-registry"), require_tool("skopeo")
    setup.acl_file.write_text(INTEROP_ACL)
    if request.param != "ES256":  # keygen's other choice must work with registry 2.x too
        key = generate_key(request.param, rsa_bits=2048)
        (setup.directory / "token.key").write_bytes(key_pem(key))
        cert = self_signed_certificate(key, "tokenauth interop")
        (setup.directory / "token.crt").write_bytes(certificate_pem(cert))
    server = await aiohttp_server(create_app(load_config(setup.config, {})))
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: no quoting surprises for paths
            {
                "version": "0.1",
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}},
                "http": {"addr": f"127.0.0.1:{port}"},
                "auth": {
                    "token": {
                        "realm": str(server.make_url("/auth")),
                        "service": SERVICE,
                        "issuer": ISSUER,
                        "rootcertbundle": str(setup.directory / "token.crt"),
                    }
                },
            }
        )
    )
    # The registry reads every REGISTRY_* variable as configuration (REGISTRY_AUTH_FILE!).
    registry_env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = await asyncio.create_subprocess_exec(
        registry_bin,
        "serve",
        str(config),
        env=registry_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://{url}/v2/") as response:
                        assert response.status == 401
                        assert "Bearer" in response.headers["WWW-Authenticate"]
                        break
                except aiohttp.ClientConnectionError:
                    if process.returncode is not None:
                        raise AssertionError("docker-registry exited") from None
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("docker-registry did not start")
        skopeo_env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        skopeo_env.update(
            REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"),  # never the user's logins
            DOCKER_CONFIG=str(tmp_path / "docker-config"),
        )
        yield Peer(url, skopeo, skopeo_env)
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), 20)


async def test_push_and_pull_through_the_reference_registry(
    peer: Peer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenauth.audit")
    image = make_image(layer_count=2, layer_size=16 * 1024)
    source = tmp_path / "source"
    write_oci_layout(source, image, "v1")
    target = f"docker://{peer.url}/team/app:v1"

    code, output = await peer.skopeo_copy(
        "--dest-creds", "alice:alice-pw", "--dest-tls-verify=false", f"oci:{source}:v1", target
    )
    assert code == 0, output

    code, output = await peer.skopeo_copy(
        "--dest-creds",
        "bob:bob-pw",
        "--dest-tls-verify=false",
        f"oci:{source}:v1",
        f"docker://{peer.url}/team/app:bob",
    )
    assert code != 0
    assert "unauthorized" in output.lower() or "denied" in output.lower(), output

    # The registry asked bob for push; tokenauth granted pull only, and the registry refused.
    bob = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tokenauth.audit"]
    bob = [line for line in bob if line["account"] == "bob"]
    assert any("repository:team/app:pull,push" in line["requested"] for line in bob)
    assert all(line["granted"] in ([], ["repository:team/app:pull"]) for line in bob)

    pulled = tmp_path / "pulled"
    code, output = await peer.skopeo_copy(
        "--src-creds", "bob:bob-pw", "--src-tls-verify=false", target, f"oci:{pulled}:v1"
    )
    assert code == 0, output
    blobs = read_oci_layout(pulled)
    assert image.manifest_digest in blobs
    assert all(blobs[digest] == data for digest, data in image.blobs.items())

    # Anonymous tokens (subject "") are accepted by the registry too.
    code, output = await peer.skopeo_copy(
        "--src-tls-verify=false", target, f"oci:{tmp_path / 'anonymous'}:v1"
    )
    assert code == 0, output


async def test_wrong_password_is_refused(peer: Peer, tmp_path: Path) -> None:
    target = f"docker://{peer.url}/team/app:v1"
    code, output = await peer.skopeo_copy(
        "--src-creds", "bob:wrong", "--src-tls-verify=false", target, f"oci:{tmp_path / 'x'}:v1"
    )
    assert code != 0 and ("401" in output or "unauthorized" in output.lower()), output
