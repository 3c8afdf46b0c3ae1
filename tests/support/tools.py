"""Finding the real clients and servers a test drives, and running them.

A test whose tool is missing skips with a message naming it, except under ``CI=true``,
where a missing tool fails the run: CI must never pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip the test because ``message`` says what cannot run here; under CI, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)


def _ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections (Linux's default
    when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, chosen at random below
    the ephemeral range.

    Binding to port 0 would hand out an ephemeral port: between this call and the server
    binding it, any outgoing connection on the machine may take it as its local port,
    and under load a server then failed to start with "address already in use".
    """
    ephemeral = _ephemeral_ports()
    candidates = range(10000, ephemeral.start) if ephemeral.start > 11000 else range(0)
    for _ in range(100):
        if not candidates:
            break
        port = random.choice(candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # no room below the ephemeral range: let the kernel pick
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tool(name: str, package: str | None = None) -> str:
    """The path of executable ``name``; skip (or, in CI, fail) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package {package or name})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must install it (.ci/run)")
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


async def run_tool(
    *args: str, env: dict[str, str] | None = None, limit_seconds: float = 120.0
) -> Completed:
    """Run a client without blocking the event loop that serves the app under test."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), limit_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Completed(process.returncode or 0, stdout.decode(), stderr.decode())


def isolated_client_env(home: str) -> dict[str, str]:
    """An environment where skopeo/podman/docker see no stale login of the machine's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "DOCKER_"))}
    env["HOME"] = home
    env["DOCKER_CONFIG"] = os.path.join(home, ".docker")
    env["REGISTRY_AUTH_FILE"] = os.path.join(home, "auth.json")
    env["XDG_RUNTIME_DIR"] = os.path.join(home, "run")
    os.makedirs(env["XDG_RUNTIME_DIR"], exist_ok=True)
    return env
