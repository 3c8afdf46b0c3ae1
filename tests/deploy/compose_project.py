"""What the compose tests share: a docker-compose project of the deployment's files on the
test engine (host networking, free ports, secrets in the test's directory), its secrets
generated as an operator does, and the wait for its registry and tokenauth to answer."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.deploy.base_image import debian_release
from tests.deploy.containers import wait_for_https
from tests.deploy.https import client_context
from tests.support.clients import CommandLine
from tests.support.portside_servers import REPOSITORY_ROOT, free_port
from tests.support.tools import require_tool

COMPOSE = REPOSITORY_ROOT / "compose"


def new_project(prefix: str) -> str:
    """A project name of its own: containers, volumes and images never meet another's."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def compose_project(
    docker: CommandLine,
    portside_image: str,
    tmp_path: Path,
    *,
    project: str,
    files: Sequence[str],
    extra: Mapping[str, str] | None = None,
) -> CommandLine:
    """docker-compose on ``files`` (in compose/) as ``project``: the session's portside
    image on the local Debian base, secrets under ``tmp_path``, the registry and
    tokenauth on free loopback ports, plus ``extra`` environment."""
    program = require_tool("docker-compose")
    registry_port, tokenauth_port = free_port(), free_port()
    env = dict(docker.env)
    env.update(
        {
            "PORTSIDE_IMAGE": portside_image,
            "PORTSIDE_BASE_IMAGE": f"portside-test-base:{debian_release()}",
            "PORTSIDE_SECRETS": str(tmp_path / "secrets"),
            "PORTSIDE_HOST": "127.0.0.1",
            "REGISTRY_ADDR": f"127.0.0.1:{registry_port}",
            "TOKENAUTH_ADDR": f"127.0.0.1:{tokenauth_port}",
            "TOKENAUTH_PORT": str(tokenauth_port),
            **(extra or {}),
        }
    )
    arguments = [a for name in files for a in ("-f", str(COMPOSE / name))]
    return CommandLine(program, env, ("--no-ansi", "-p", project, *arguments))


def generate_secrets(compose: CommandLine) -> str:
    """``compose/generate-secrets`` for localhost and 127.0.0.1; the admin's password."""
    generated = subprocess.run(
        [str(COMPOSE / "generate-secrets"), "--host", "localhost", "--host", "127.0.0.1"],
        env=dict(compose.env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stderr
    return (secrets_of(compose) / "admin-password").read_text().strip()


def secrets_of(compose: CommandLine) -> Path:
    return Path(compose.env["PORTSIDE_SECRETS"])


def wait_for_services(docker: CommandLine, compose: CommandLine) -> None:
    """Until the registry and then tokenauth (which may answer a moment later: logins go
    to it) answer over HTTPS with the deployment's certificate."""
    trust_ca = client_context(secrets_of(compose) / "ca.crt")
    registry_port = int(compose.env["REGISTRY_ADDR"].rpartition(":")[2])
    registry = compose.ok("ps", "-q", "registry").strip()
    wait_for_https(docker, registry, registry_port, trust_ca)
    tokenauth = compose.ok("ps", "-q", "tokenauth").strip()
    tokenauth_port = int(compose.env["TOKENAUTH_PORT"])
    wait_for_https(docker, tokenauth, tokenauth_port, trust_ca, path="/health")
