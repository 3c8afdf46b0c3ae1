"""portside's servers started over HTTPS in child processes, and a strict HTTPS client."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.portside_servers import REPOSITORY_ROOT, ServerProcess, server_env


def client_context(
    root: Path, *, certificate: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client that trusts only ``root`` (not the system CAs) and checks host names."""
    context = ssl.create_default_context(cafile=str(root))
    if certificate is not None:
        context.load_cert_chain(str(certificate), str(key) if key else None)
    return context


def https_get(port: int, path: str, context: ssl.SSLContext) -> int:
    """The status of ``GET path`` on ``https://localhost:port``; raises if TLS fails."""
    connection = http.client.HTTPSConnection("localhost", port, timeout=5, context=context)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


class HTTPSServerProcess(ServerProcess):
    """A ServerProcess that is ready once it answers over TLS with ``context``."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        port: int,
        ready_path: str,
        log_path: Path,
        *,
        context: ssl.SSLContext,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, args, port, ready_path, log_path, env)
        self.context = context

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def _answers(self) -> bool:
        try:
            return https_get(self.port, self.ready_path, self.context) == 200
        except (http.client.HTTPException, OSError):
            return False


def run_to_exit(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ARGS`` expecting it to stop by itself (a refused start-up)."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPOSITORY_ROOT,
        env=server_env(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
