"""The compose deployment (compose/), driven with Debian's docker-compose v1 as an operator
would: generate the secrets, build, ``up -d``, ``docker login`` through tokenauth, push,
pull, ``down``, and the data still there after ``up`` again.

The test engine has no bridge, so the files are combined with docker-compose.hostnet.yml
(host networking on free ports) instead of the port mappings of the default override.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.compose_project import (
    COMPOSE,
    compose_project,
    generate_secrets,
    new_project,
    wait_for_services,
)
from tests.support.clients import CommandLine, write_rootfs_tarball
from tests.support.tools import require_tool


@pytest.fixture
def compose(docker: CommandLine, portside_image: str, tmp_path: Path) -> Iterator[CommandLine]:
    """docker-compose on the deployment's files, with a project of its own; ``down -v``
    at the end removes the containers and the data volume."""
    files = ("docker-compose.yml", "docker-compose.hostnet.yml")
    project = new_project("portside-test")
    command = compose_project(docker, portside_image, tmp_path, project=project, files=files)
    yield command
    command.run("down", "-v", "--timeout", "5")


def test_compose_deployment_login_push_pull_and_data_across_down_up(
    docker: CommandLine, compose: CommandLine, tmp_path: Path
) -> None:
    password = generate_secrets(compose)
    registry = compose.env["REGISTRY_ADDR"]
    reference = f"{registry}/team/app:1"

    compose.ok("build")
    compose.ok("up", "-d")
    wait_for_services(docker, compose)
    assert docker.login(registry, "admin", "not-the-password").returncode != 0
    assert docker.login(registry, "admin", password).returncode == 0
    docker.ok("import", str(write_rootfs_tarball(tmp_path / "rootfs.tar", "compose")), reference)
    docker.ok("push", reference)
    docker.ok("rmi", reference)
    docker.ok("pull", reference)

    compose.ok("down")
    docker.ok("rmi", reference)
    compose.ok("up", "-d")
    wait_for_services(docker, compose)
    docker.ok("pull", reference)  # the named volume kept the image
    docker.ok("logout", registry)
    docker.ok("rmi", reference)
    assert docker.run("pull", reference).returncode != 0  # anonymous: no access


def test_generate_secrets_keeps_existing_files(
    docker: CommandLine, portside_image: str, tmp_path: Path
) -> None:
    env = dict(docker.env, PORTSIDE_IMAGE=portside_image, PORTSIDE_SECRETS=str(tmp_path))
    script = [str(COMPOSE / "generate-secrets"), "--host", "registry.example.com"]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "domain.key").read_bytes()
    assert (tmp_path / "domain.key").stat().st_mode & 0o077 == 0
    second = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "exists: kept" in second.stderr
    assert (tmp_path / "domain.key").read_bytes() == key


def test_scaleout_file_gives_the_registry_a_configuration_it_accepts(
    docker: CommandLine, portside_image: str, tmp_path: Path
) -> None:
    """The scale-out override with the default port mappings (test_compose_scaleout.py
    brings it up with host networking): it merges with the other files, and the image's
    registry loads the configuration the merged environment gives it, with S3 storage and
    the Redis cache and nothing ignored."""
    program = require_tool("docker-compose")
    for name in ("registry.env", "registry-s3.env", "s3.env"):
        (tmp_path / name).write_text(f"# {name}\n")
    env = dict(docker.env, PORTSIDE_IMAGE=portside_image, PORTSIDE_SECRETS=str(tmp_path))
    files = ("docker-compose.yml", "docker-compose.override.yml", "docker-compose.scaleout.yml")
    merged = CommandLine(program, env, [a for f in files for a in ("-f", str(COMPOSE / f))])
    config = yaml.safe_load(merged.ok("config"))
    assert {"registry", "tokenauth", "redis", "s3", "s3-bucket"} <= set(config["services"])
    # Nothing comes from a public registry: every image but portside's is built here.
    assert all("build" in service for service in config["services"].values())
    environment = {
        **config["services"]["registry"]["environment"],
        "REGISTRY_STORAGE_S3_ACCESSKEY": "access",
        "REGISTRY_STORAGE_S3_SECRETKEY": "secret",
    }
    check = (
        "from registry.config import load_config, unsupported_settings; import os; "
        "c = load_config('/etc/docker/registry/config.yml', os.environ); "
        "print(c.storage.driver_name, c.storage.s3.bucket, c.storage.s3.regionendpoint, "
        "c.storage.cache.blobdescriptor, c.redis.addr, unsupported_settings(c))"
    )
    arguments = [a for k, v in environment.items() for a in ("-e", f"{k}={v}")]
    printed = docker.ok(
        "run", "--rm", *arguments, "--entrypoint", "python3", portside_image, "-c", check
    )
    assert printed.split() == [
        "s3", "registry", "http://s3:7480", "redis", "redis:6379", "[]"
    ]  # fmt: skip
