"""The real container clients — docker, podman, skopeo — run with isolated credentials.

Every client gets its own HOME, ``DOCKER_CONFIG`` and ``REGISTRY_AUTH_FILE`` (see
:func:`tests.support.tools.isolated_client_env`): skopeo and podman fall back to
``~/.docker/config.json``, so a stale login of the machine's would silently make a
logged-out test pass. podman keeps its images in a scratch ``--root`` on ``vfs``.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.oci import make_layer
from tests.support.tools import Completed

CLIENT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class CommandLine:
    """A client program with its leading options and environment."""

    program: str
    env: Mapping[str, str]
    options: Sequence[str] = ()

    def run(self, *args: str, stdin: str | None = None) -> Completed:
        completed = subprocess.run(
            [self.program, *self.options, *args],
            env=dict(self.env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_SECONDS,
            check=False,
        )
        return Completed(completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run and insist on success; the standard output."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def login(self, registry: str, user: str, password: str, *options: str) -> Completed:
        """``login`` with the password on stdin, never on the command line."""
        return self.run("login", *options, "-u", user, "--password-stdin", registry, stdin=password)


def docker_client(docker: str, env: Mapping[str, str]) -> CommandLine:
    return CommandLine(docker, env)


def podman_client(podman: str, env: Mapping[str, str], storage: Path) -> CommandLine:
    """podman as it runs here: own root and runroot on vfs, no systemd, no journald."""
    return CommandLine(
        podman,
        env,
        (
            f"--root={storage / 'root'}",
            f"--runroot={storage / 'run'}",
            f"--tmpdir={storage / 'tmp'}",
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ),
    )


def skopeo_client(skopeo: str, env: Mapping[str, str]) -> CommandLine:
    # No policy.json is needed for copying between a layout and a registry we trust.
    return CommandLine(skopeo, env, ("--insecure-policy",))


def output(result: Completed) -> str:
    """What a user sees in the terminal: both streams."""
    return result.stdout + result.stderr


def write_rootfs_tarball(path: Path, seed: str) -> Path:
    """A tiny root filesystem (a few files, no base image) for ``docker import``; its
    content differs per ``seed``, so every imported image has its own layer digest."""
    filler = hashlib.sha256(seed.encode()).digest() * 512
    path.write_bytes(
        make_layer(
            {
                "hello.txt": f"hello from {seed}\n".encode(),
                "etc/portside-e2e": seed.encode(),
                "data/blob.bin": filler,
            }
        )
    )
    return path
