"""``scripts/run`` as a user runs it, in its own session so that everything it starts can
be found (its process group) and stopped; its output in a file the test reads.

The environment is the test run's without ``REGISTRY_*``, ``TOKENAUTH_*`` and ``DOCKER_*``
(see :func:`tests.support.portside_servers.server_env`), plus the overrides a test gives:
a scratch ``PORTSIDE_DATA`` and free ports, never the defaults 5000 and 5001.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from tests.support.portside_servers import REPOSITORY_ROOT, server_env

# Start-up runs setup-python and two Python servers on a shared, busy machine.
START_SECONDS = 120.0
LOGIN_HINT = "log in with:"


class RunScript:
    """One ``scripts/run`` process group."""

    def __init__(self, directory: Path, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        self.output_path = directory / "scripts-run.out"
        self.env = server_env(env)
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RunScript:
        with open(self.output_path, "ab") as output:
            self.process = subprocess.Popen(
                [str(REPOSITORY_ROOT / "scripts" / "run"), *self.args],
                cwd=REPOSITORY_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = START_SECONDS) -> str:
        """The first output line containing ``text``; fail if scripts/run ends first."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if text in line:
                    return line
            if self.process.poll() is not None:
                raise AssertionError(
                    f"scripts/run ended ({self.process.returncode}):\n" + self.output()
                )
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from scripts/run in {timeout:.0f}s:\n{self.output()}")

    def wait_exit(self, timeout: float = START_SECONDS) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def live_members(self) -> list[int]:
        """Processes of scripts/run's group still running (zombies do not count)."""
        assert self.process is not None
        group, members = self.process.pid, []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == group:
                members.append(int(entry.name))
        return members

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to scripts/run (which stops its services), then SIGKILL what is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.live_members() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.live_members():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout)


def get(url: str, headers: Mapping[str, str] | None = None) -> http.client.HTTPResponse:
    """A plain-HTTP GET (the reply read in full)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request(
        "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=dict(headers or {})
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def token_for(realm: str, user: str, password: str, scope: str) -> str:
    """A bearer token from the realm for ``scope``, with Basic credentials."""
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    parts = urlsplit(realm)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    query = urlencode({"service": "portside", "scope": scope})
    connection.request("GET", f"{parts.path}?{query}", headers={"Authorization": f"Basic {basic}"})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 200, body
    return str(json.loads(body)["token"])
