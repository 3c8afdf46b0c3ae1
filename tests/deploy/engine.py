"""A Docker engine for the image and compose tests, on overlay2 when the kernel allows.

The e2e engine (:mod:`tests.support.docker_engine`) uses ``vfs``, which copies the whole
root filesystem for every build step: with a Python base image each ``ENV`` or ``USER``
line costs about 16 s, a full image build minutes. overlay2 builds the same image in
well under a minute, so these tests start their own engine the same way (no iptables, no
bridge, all state in one scratch directory) and fall back to ``vfs`` where overlay2
cannot mount.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.support.docker_engine import (
    MAX_DIRECTORY_LENGTH,
    DockerEngine,
    EngineUnavailable,
)

STORAGE_DRIVERS = ("overlay2", "vfs")


def start_build_engine(dockerd: str, directory: Path, timeout: float = 30.0) -> DockerEngine:
    """dockerd with state in ``directory``: overlay2 if it works here, else vfs."""
    if len(str(directory)) > MAX_DIRECTORY_LENGTH:
        raise EngineUnavailable(f"{directory} is too long a path for dockerd's unix sockets")
    failures = []
    for driver in STORAGE_DRIVERS:
        root = directory / driver
        root.mkdir()
        engine = _start(dockerd, root, driver, timeout)
        if isinstance(engine, DockerEngine):
            return engine
        failures.append(f"{driver}: {engine}")
    raise EngineUnavailable("\n".join(failures))


def _start(dockerd: str, directory: Path, driver: str, timeout: float) -> DockerEngine | str:
    with open(directory / "dockerd.log", "wb") as log:
        process = subprocess.Popen(
            [
                dockerd,
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--storage-driver={driver}",
                f"--data-root={directory / 'data'}",
                f"--exec-root={directory / 'exec'}",
                f"--pidfile={directory / 'dockerd.pid'}",
                f"-H=unix://{directory / 'docker.sock'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    engine = DockerEngine(directory, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"dockerd exited with status {process.returncode}:\n{engine.log_tail()}"
        if _answers(engine.socket_path):
            return engine
        time.sleep(0.1)
    engine.stop()
    return f"dockerd did not answer within {timeout:.0f}s:\n{engine.log_tail()}"


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096)
    except OSError:
        return False
    return b" 200 " in reply.split(b"\r\n", 1)[0]
