"""portside's own servers run as an operator runs them: ``python -m registry serve CONFIG``
and ``python -m tokenauth serve CONFIG`` in child processes on free loopback ports.

Each process gets an environment without any ``REGISTRY_*``, ``TOKENAUTH_*`` or
``DOCKER_*`` variable of the test run's (the registry reads every ``REGISTRY_*`` as
configuration, skopeo's ``REGISTRY_AUTH_FILE`` included), plus the overrides a test gives.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.tools import free_port as free_port  # re-exported: callers import it here

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
# A server answers about a second after it is started on a quiet machine; on the shared
# 2-core one under a load of 20 and more, its imports alone took over 20 s (the UI tests'
# first start failed so). Only a server that never answers waits this long.
START_TIMEOUT = 90.0

# A config file both portside and the reference registry 2.8.2 read the same way:
# filesystem storage at {root}, deletes enabled, quiet logs, listening on {port}.
FILESYSTEM_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
_FOREIGN_PREFIXES = ("REGISTRY_", "TOKENAUTH_", "DOCKER_")


def server_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(overrides or {})
    return env


def run_python_module(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``python -m ARGS`` (a portside command) to completion; its stdout."""
    completed = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPOSITORY_ROOT,
        env=server_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"python -m {' '.join(args[:2])} failed:\n{completed.stderr}")
    return completed.stdout


class ServerProcess:
    """A portside server in a child process, its output in a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        port: int,
        ready_path: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.args, self.port, self.ready_path = name, list(args), port, ready_path
        self.log_path = log_path
        self.env = server_env(env)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as image references and ``docker login`` name the registry."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once ``text`` is in it: both services write their lines from a thread,
        a moment after the request that caused them is answered."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout:.0f}s:\n{log}")
            time.sleep(0.02)
        return log

    def start(self, timeout: float = START_TIMEOUT) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self.args],
                cwd=REPOSITORY_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start-up:\n{self.log()}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.name} did not answer within {timeout:.0f}s:\n{self.log()}")

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", self.ready_path)
            return connection.getresponse().status == 200
        except (http.client.HTTPException, OSError):
            return False
        finally:
            connection.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would end it: no draining, no clean-up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)


def registry_process(tmp_path: Path, **settings: str) -> ServerProcess:
    """``registry serve`` (not started) on a free loopback port, logging to
    ``tmp_path/registry.log``; ``settings`` are its ``REGISTRY_*`` variables, storage
    among them."""
    port = free_port()
    return ServerProcess(
        "registry",
        ["registry", "serve"],
        port,
        "/",
        tmp_path / "registry.log",
        env={"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", **settings},
    )


def tokenauth_process(
    tmp_path: Path, config: Path, *arguments: str, **settings: str
) -> ServerProcess:
    """``tokenauth serve [ARGUMENTS] CONFIG`` (not started) on a free loopback port,
    logging to ``tmp_path/tokenauth.log``; ``settings``: more environment variables."""
    port = free_port()
    return ServerProcess(
        "tokenauth",
        ["tokenauth", "serve", *arguments, str(config)],
        port,
        "/health",
        tmp_path / "tokenauth.log",
        env={"TOKENAUTH_HTTP_ADDR": f"127.0.0.1:{port}", **settings},
    )


def filesystem_registry(tmp_path: Path, **settings: str) -> ServerProcess:
    """``registry_process`` storing in ``tmp_path/data`` unless ``settings`` say where."""
    storage = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data")}
    return registry_process(tmp_path, **{**storage, **settings})
