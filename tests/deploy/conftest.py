"""Fixtures for the deployment tests: a Docker engine able to build images quickly, the
locally bootstrapped Python base image, and portside's image built from the repository's
``Dockerfile`` on that base — once per test session.

Missing tools (dockerd, docker, debootstrap) or an engine that cannot start skip these
tests with a message, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.base_image import BaseImageUnavailable, debian_release, import_base_image
from tests.deploy.engine import start_build_engine
from tests.support.clients import CommandLine, docker_client
from tests.support.docker_engine import DockerEngine, engine_for_session
from tests.support.portside_servers import REPOSITORY_ROOT
from tests.support.tools import unavailable

IMAGE = "portside:test"
BUILD_TIMEOUT_SECONDS = 900


@pytest.fixture(scope="session")
def build_engine() -> Iterator[DockerEngine]:
    yield from engine_for_session("portside-build-", start_build_engine)


@pytest.fixture
def docker(build_engine: DockerEngine, tmp_path: Path) -> CommandLine:
    """The docker CLI on the build engine, with its own empty client config."""
    return docker_client(shutil.which("docker") or "docker", build_engine.client_env(tmp_path))


@pytest.fixture(scope="session")
def portside_image(build_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``portside:test`` built from the repository's Dockerfile on the local Debian base."""
    env = build_engine.client_env(tmp_path_factory.mktemp("image-build"))
    docker = shutil.which("docker") or "docker"
    base = f"portside-test-base:{debian_release()}"
    try:
        import_base_image([docker], env, base)
    except BaseImageUnavailable as error:
        unavailable(f"no base image for the build: {error}")
    completed = subprocess.run(
        [
            docker,
            "build",
            # --bridge=none: RUN steps reach the package index only on the host's network.
            "--network=host",
            f"--build-arg=BASE_IMAGE={base}",
            f"--tag={IMAGE}",
            str(REPOSITORY_ROOT),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return IMAGE
