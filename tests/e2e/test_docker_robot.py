"""A CI robot account with the docker CLI and the real Docker engine: ``tokenauth robot
create`` prints a secret, ``docker login -u robot$NAME`` takes it, the robot pushes and
pulls within its rights (which the ACL caps), and ``revoke`` stops it at the next token
request, although docker keeps the refresh token from its login."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import ClientFactory
from tests.e2e.test_docker_token import DENIED, image_id, import_image, push
from tests.support.clients import output
from tests.support.deployments import TokenDeployment
from tests.support.portside_servers import run_python_module


def robot(deployment: TokenDeployment, *args: str) -> str:
    config = str(deployment.directory / "tokenauth.yml")
    return run_python_module("tokenauth", "robot", "--config", config, *args).strip()


def test_a_robot_pushes_within_its_rights_until_revoked(
    token_deployment: TokenDeployment, docker_as: ClientFactory, tmp_path: Path
) -> None:
    registry = token_deployment.registry.address
    pusher_secret = robot(
        token_deployment, "create", "pusher", "--rights", "repository:ci/*:pull,push"
    )
    reader_secret = robot(token_deployment, "create", "reader", "--rights", "repository:ci/*:pull")
    pusher, reader = docker_as("pusher"), docker_as("reader")
    assert pusher.login(registry, "robot$pusher", pusher_secret).returncode == 0
    assert reader.login(registry, "robot$reader", reader_secret).returncode == 0

    reference = f"{registry}/ci/app:1"
    original = import_image(pusher, tmp_path, reference)
    push(pusher, reference)
    # Outside its rights (though a person could): refused.
    pusher.ok("tag", reference, f"{registry}/public/app:1")
    refused = pusher.run("push", f"{registry}/public/app:1")
    assert refused.returncode != 0 and DENIED in output(refused)

    reader.ok("pull", reference)
    assert image_id(reader, reference) == original
    reader.ok("tag", reference, f"{registry}/ci/app:2")
    refused = reader.run("push", f"{registry}/ci/app:2")
    assert refused.returncode != 0 and DENIED in output(refused)

    robot(token_deployment, "revoke", "reader")
    reader.ok("rmi", reference)
    revoked = reader.run("pull", reference)
    assert revoked.returncode != 0, output(revoked)
    assert reader.login(registry, "robot$reader", reader_secret).returncode != 0
    # The other robot is untouched (one engine: the reader's tag is the pusher's too).
    pusher.ok("push", f"{registry}/ci/app:2")
    log = token_deployment.tokenauth.log()
    assert pusher_secret not in log and reader_secret not in log
