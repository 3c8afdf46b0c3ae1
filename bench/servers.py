"""Starting and stopping the servers under test: portside, the reference registry, tokenauth.

Every server runs as its own process on loopback with its output in a log file (never a
pipe, which would block a chatty server once full). ``REGISTRY_*`` variables are removed
from the environment of both registries: each reads them all as configuration.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import procstat

PORTSIDE = "portside"
REFERENCE = "reference"
TOKENAUTH = "tokenauth"
REFERENCE_BINARY = "docker-registry"
START_TIMEOUT = 30.0


class ServerRefused(RuntimeError):
    """The server exited during start-up (for example: it refuses the configuration)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(extra or {})
    return env


@dataclass(eq=False)
class Server:
    """One server process: how to start it, where it listens, where its output goes."""

    name: str
    command: Sequence[str]
    port: int
    log_path: Path
    ready_path: str = "/"
    env: dict[str, str] = field(default_factory=clean_environ)
    root: Path | None = None  # a registry's storage root
    cwd: Path | None = None  # for portside: the source tree ``python -m`` runs from
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    async def start(self) -> None:
        """Start and wait until ``ready_path`` answers 200; ServerRefused if it exits."""
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                if self.process.returncode is not None:
                    raise ServerRefused(f"{self.name} exited: {self.log_tail()}")
                try:
                    async with session.get(self.url + self.ready_path) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT}s")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def peak_rss_mib(self) -> float:
        return procstat.peak_rss_mib(self.pid)

    def reset_peak_rss(self) -> bool:
        return procstat.reset_peak_rss(self.pid)

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid)


@dataclass(frozen=True)
class TokenSettings:
    """The registry side of token auth: where tokens come from and which certificate signs."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


def registry_config(
    root: Path,
    port: int,
    token: TokenSettings | None = None,
    *,
    access_log: bool = False,
    storage: str | None = None,
) -> str:
    """One config file both registries read: the issue's 'equivalent config'; with
    ``access_log``, the production one: level info, the access log on, and Prometheus
    metrics served on a debug address (both registries have Distribution's keys).
    ``storage`` replaces the filesystem driver on ``root``: the YAML lines of another
    driver (and ``redirect``), indented under ``storage:``."""
    level, disabled = ("info", "false") if access_log else ("error", "true")
    driver = storage or f"  filesystem:\n    rootdirectory: {root}\n"
    text = f"""\
version: 0.1
log:
  level: {level}
  accesslog:
    disabled: {disabled}
storage:
{driver}  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
    if access_log:
        text += f"""\
  debug:
    addr: 127.0.0.1:{free_port()}
    prometheus:
      enabled: true
"""
    if token is not None:
        text += f"""\
auth:
  token:
    realm: {token.realm}
    service: {token.service}
    issuer: {token.issuer}
    rootcertbundle: {token.rootcertbundle}
"""
    return text


def reference_available() -> bool:
    return shutil.which(REFERENCE_BINARY) is not None


def registry_server(
    name: str,
    workdir: Path,
    root: Path,
    token: TokenSettings | None = None,
    extra_env: Mapping[str, str] | None = None,
    portside_tree: Path | None = None,
    access_log: bool = False,
    storage: str | None = None,
) -> Server:
    """A portside or reference registry serving ``root`` (or the ``storage`` of
    ``registry_config``), its config written in ``workdir``."""
    port = free_port()
    suffix = "-token" if token else ""
    config = workdir / f"{name}{suffix}.yml"
    config.write_text(registry_config(root, port, token, access_log=access_log, storage=storage))
    if name == PORTSIDE:
        command: list[str] = [sys.executable, "-m", "registry", "serve", str(config)]
    else:
        command = [shutil.which(REFERENCE_BINARY) or REFERENCE_BINARY, "serve", str(config)]
    env = clean_environ(extra_env if name == PORTSIDE else None)
    cwd = portside_tree if name == PORTSIDE else None
    log_path = workdir / f"{name}{suffix}.log"
    return Server(name, command, port, log_path, env=env, root=None if storage else root, cwd=cwd)
