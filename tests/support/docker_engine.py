"""The real Docker engine, started by hand for a test session, and stopped with its containerd.

``dockerd`` runs without iptables or bridge, on ``vfs`` by default, with every path it writes —
data, exec state, socket, pid file — in one scratch directory, so it neither needs nor
touches the machine's own Docker set-up. Clients reach it only through the ``DOCKER_HOST``
of the environments built by :meth:`DockerEngine.client_env`; the test process itself
never exports it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.mounts import unmount_below
from tests.support.tools import isolated_client_env, require_tool, unavailable

# A unix socket path is limited to 108 bytes; containerd's lives deeper than dockerd's.
MAX_DIRECTORY_LENGTH = 60


class EngineUnavailable(Exception):
    """dockerd cannot run here; the message says why."""


@dataclass
class DockerEngine:
    """A running dockerd and where it keeps its state."""

    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def socket_path(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.directory / "dockerd.log"

    def client_env(self, home: Path) -> dict[str, str]:
        """A docker CLI environment for this engine with its own, empty ``DOCKER_CONFIG``."""
        env = isolated_client_env(str(home))
        env["DOCKER_HOST"] = self.host
        return env

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM dockerd, wait for it and for the containerd it started to be gone, then
        unmount what they left mounted in the engine's directory (network namespaces)."""
        containerd = _containerd_pid(self.directory / "exec")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        if containerd is not None and not _wait_gone(containerd, self.directory, timeout):
            os.kill(containerd, signal.SIGKILL)
            _wait_gone(containerd, self.directory, timeout)
        unmount_below(self.directory)


def dockerd_options(directory: Path, storage_driver: str = "vfs") -> list[str]:
    """dockerd's options for an engine kept in ``directory``, each as ``--name=value``
    (the README's by-hand start gives the same ones: tests/e2e/test_readme_quickstart.py)."""
    return [
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--storage-driver={storage_driver}",
        f"--data-root={directory / 'data'}",
        f"--exec-root={directory / 'exec'}",
        f"--pidfile={directory / 'dockerd.pid'}",
        f"-H=unix://{directory / 'docker.sock'}",
    ]


def start_docker_engine(
    dockerd: str,
    directory: Path,
    timeout: float = 30.0,
    *,
    storage_driver: str = "vfs",
    extra_options: Sequence[str] = (),
) -> DockerEngine:
    """Start dockerd with all its state in ``directory``; raise EngineUnavailable if it can't.

    ``vfs`` works everywhere; ``overlay2`` builds images far faster where it can mount.
    ``extra_options`` are more dockerd options (``--registry-mirror=URL``, say).
    """
    if os.geteuid() != 0:
        raise EngineUnavailable("dockerd needs root to run (the tests start their own engine)")
    if len(str(directory)) > MAX_DIRECTORY_LENGTH:
        raise EngineUnavailable(f"{directory} is too long a path for dockerd's unix sockets")
    with open(directory / "dockerd.log", "wb") as log:
        # Same process group as pytest: an interrupted run takes the engine down with it.
        process = subprocess.Popen(
            [dockerd, *dockerd_options(directory, storage_driver), *extra_options],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    engine = DockerEngine(directory, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineUnavailable(
                f"dockerd exited with status {process.returncode}:\n{engine.log_tail()}"
            )
        if _ping(engine.socket_path):
            return engine
        time.sleep(0.1)
    engine.stop()
    raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f}s:\n{engine.log_tail()}")


def _ping(path: Path) -> bool:
    """True once the engine answers ``GET /_ping`` on its socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _containerd_pid(exec_root: Path) -> int | None:
    try:
        return int((exec_root / "containerd" / "containerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_gone(pid: int, directory: Path, timeout: float) -> bool:
    """Wait for our containerd to exit (a zombie counts as gone: init may never reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_our_process(pid, directory):
            return True
        time.sleep(0.1)
    return False


def _is_our_process(pid: int, directory: Path) -> bool:
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    # The pid may have been reused by then: only the containerd configured under our
    # exec root counts.
    return state != "Z" and str(directory).encode() in command


def engine_for_session(
    prefix: str, start: Callable[[str, Path], DockerEngine]
) -> Generator[DockerEngine, None, None]:
    """The body of a session fixture: ``start(dockerd, directory)`` in a short scratch
    directory (unix socket paths must stay short, so not under pytest's basetemp), skipped
    (or, under CI, failed) when the engine cannot run, stopped and removed at the end."""
    dockerd = require_tool("dockerd", "docker.io")
    require_tool("docker", "docker.io")
    if os.geteuid() != 0:
        unavailable("dockerd needs root to run (the tests start their own engine)")
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        engine = start(dockerd, directory)
    except EngineUnavailable as error:
        unmount_below(directory)  # an engine that failed may have mounted its data root
        shutil.rmtree(directory, ignore_errors=True)
        unavailable(f"the Docker engine cannot run here: {error}")
    try:
        yield engine
    finally:
        engine.stop()
        unmount_below(directory)  # below the engine's own: a fallback engine's, say
        shutil.rmtree(directory, ignore_errors=True)
