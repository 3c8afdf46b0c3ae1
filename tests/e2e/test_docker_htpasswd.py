"""The docker CLI against portside in htpasswd mode, configured as the guide's "Native basic
auth" does it: ``REGISTRY_AUTH=htpasswd``, ``REGISTRY_AUTH_HTPASSWD_REALM`` and
``REGISTRY_AUTH_HTPASSWD_PATH``, with users made by ``registry htpasswd -Bbn``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from tests.e2e.conftest import ClientFactory
from tests.support.clients import CommandLine, output, write_rootfs_tarball
from tests.support.deployments import HTPASSWD_REALM, PASSWORDS, HtpasswdDeployment


def image_id(docker: CommandLine, reference: str) -> str:
    return docker.ok("image", "inspect", "--format", "{{.Id}}", reference).strip()


def test_docker_login_push_and_pull(
    htpasswd_deployment: HtpasswdDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    alice = docker_as("alice")
    registry = htpasswd_deployment.registry.address
    logged_in = alice.login(registry, "alice", PASSWORDS["alice"])
    assert logged_in.returncode == 0, output(logged_in)

    reference = f"{registry}/alice/basic:1"
    tarball = write_rootfs_tarball(tmp_path / "rootfs.tar.gz", "htpasswd")
    alice.ok("import", str(tarball), reference)
    original = image_id(alice, reference)
    pushed = alice.ok("push", reference)
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
    assert found, pushed
    alice.ok("rmi", reference)

    alice.ok("pull", reference)
    assert image_id(alice, reference) == original
    digests = json.loads(
        alice.ok("image", "inspect", "--format", "{{json .RepoDigests}}", reference)
    )
    assert digests == [f"{registry}/alice/basic@{found.group(1)}"]

    # Without a login, the same pull is refused.
    refused = docker_as("anonymous").run("pull", reference)
    assert refused.returncode != 0
    assert "no basic auth credentials" in output(refused)


def test_a_wrong_password_is_refused(
    htpasswd_deployment: HtpasswdDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    bob = docker_as("bob")
    registry = htpasswd_deployment.registry.address
    failed = bob.login(registry, "bob", "not-" + PASSWORDS["bob"])
    assert failed.returncode != 0
    assert "unauthorized" in output(failed).lower()
    config = tmp_path / "bob" / ".docker" / "config.json"
    assert not config.exists() or registry not in json.loads(config.read_text()).get("auths", {})
    # And the right one works, so it was the password that was refused.
    assert bob.login(registry, "bob", PASSWORDS["bob"]).returncode == 0


async def test_the_basic_challenge(htpasswd_deployment: HtpasswdDeployment) -> None:
    url = htpasswd_deployment.registry.url
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/v2/") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == f'Basic realm="{HTPASSWD_REALM}"'
            assert (await response.json())["errors"][0]["code"] == "UNAUTHORIZED"
        async with session.get(url + "/") as response:
            assert response.status == 200
        alice = {"Authorization": aiohttp.encode_basic_auth("alice", PASSWORDS["alice"])}
        async with session.get(url + "/v2/", headers=alice) as response:
            assert response.status == 200
