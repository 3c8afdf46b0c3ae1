"""The ``registry serve`` command as an operator runs it: a config file plus REGISTRY_*
overrides, a clean stop on SIGTERM, a clear refusal of a bad config, and no corrupt blob
after the process is killed in the middle of an upload."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.registry.test_config import STOCK_REGISTRY_2
from tests.support.tmpfs import mounted_tmpfs
from tests.support.tools import free_port

# registry:2's stock config, on a tmp root and a free loopback port.
STOCK_CONFIG = STOCK_REGISTRY_2.replace("/var/lib/registry", "{root}").replace(
    "addr: :5000", "addr: 127.0.0.1:{port}"
)


START_BOUND = 60.0  # seconds


def clean_environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(extra)
    return env


class RunningRegistry:
    def __init__(self, config: Path, port: int, env: dict[str, str]) -> None:
        self.config, self.port, self.env = config, port, env
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "registry", "serve", str(self.config), env=self.env
        )
        # Polled for a long while: a start (or a restart after a kill) takes well under a
        # second alone, and many times that on the shared 2-core machine under load.
        deadline = time.monotonic() + START_BOUND
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline and self.process.returncode is None:
                try:
                    async with session.get(self.url + "/") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"registry did not start (exit status {self.process.returncode})")

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        return await asyncio.wait_for(self.process.wait(), START_BOUND)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningRegistry]:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(STOCK_CONFIG.format(root=tmp_path / "data", port=port))
    running = RunningRegistry(config, port, clean_environ(REGISTRY_STORAGE_DELETE_ENABLED="true"))
    await running.start()
    yield running
    await running.stop(signal.SIGKILL)


async def test_stock_config_serves_and_stops_cleanly(server: RunningRegistry) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/v2/") as response:
            assert response.status == 200
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        # The environment override turned deletion on: deleting an unknown blob is 404.
        digest = "sha256:" + "0" * 64
        async with session.delete(f"{server.url}/v2/app/blobs/{digest}") as response:
            assert response.status == 404
    assert await server.stop(signal.SIGTERM) == 0


async def test_a_bad_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: 5\n  bogus: 1\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry",
        "serve",
        str(config),
        env=clean_environ(),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"storage" in stderr


async def test_killed_mid_upload_leaves_no_corrupt_blob(server: RunningRegistry) -> None:
    data = os.urandom(4 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/v2/app/blobs/uploads/") as response,
    ):
        location = response.headers["Location"]
    path = location.split(str(server.port), 1)[1]

    # Send half the declared body, then kill the server while it waits for the rest.
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\nContent-Range: 0-{len(data) - 1}\r\n\r\n"
    )
    writer.write(head.encode() + data[: len(data) // 2])
    await writer.drain()
    # Killed only once some of it is on disk (a fixed pause was too short under load).
    upload_id = path.split("?")[0].rsplit("/", 1)[1]
    stored = (
        server.config.parent / f"data/docker/registry/v2/repositories/app/_uploads/{upload_id}/data"
    )
    async with asyncio.timeout(START_BOUND):
        for _ in itertools.count():
            if stored.stat().st_size > 0:
                break
            await asyncio.sleep(0.05)
    await server.stop(signal.SIGKILL)
    writer.close()

    await server.start()
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{server.url}/v2/app/blobs/{digest}") as response:
            assert response.status == 404
        async with session.get(server.url + path) as response:
            assert response.status == 204
            received = int(response.headers["Range"].split("-")[1]) + 1
        assert 0 < received <= len(data) // 2
        async with session.patch(
            server.url + path,
            data=io.BytesIO(data[received:]),
            headers={"Content-Range": f"{received}-{len(data) - 1}"},
        ) as response:
            assert response.status == 202
        async with session.put(server.url + path, params={"digest": digest}) as response:
            assert response.status == 201
        async with session.get(f"{server.url}/v2/app/blobs/{digest}") as response:
            assert await response.read() == data


async def refused_start_up(env: dict[str, str]) -> tuple[int | None, bytes]:
    """``registry serve``'s exit status and stderr; a server that starts instead is
    stopped after 20 s (None)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
        return None, stderr
    return process.returncode, stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"REGISTRY_AUTH": "silly", "REGISTRY_AUTH_SILLY_REALM": "r"}, b"auth.silly"),
        (
            {
                "REGISTRY_AUTH": "token",
                "REGISTRY_AUTH_TOKEN_REALM": "https://auth.example/token",
                "REGISTRY_AUTH_TOKEN_SERVICE": "registry",
                "REGISTRY_AUTH_TOKEN_ISSUER": "issuer",
                "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": "/nonexistent/bundle.crt",
            },
            b"auth",
        ),
        (
            {
                "REGISTRY_AUTH": "htpasswd",
                "REGISTRY_AUTH_HTPASSWD_REALM": "r",
                "REGISTRY_AUTH_HTPASSWD_PATH": "/nonexistent/htpasswd",
            },
            b"auth",
        ),
    ],
)
async def test_unusable_auth_stops_start_up(
    tmp_path: Path, overrides: dict[str, str], expected: bytes
) -> None:
    returncode, stderr = await refused_start_up(
        clean_environ(REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(tmp_path), **overrides)
    )
    assert returncode == 2, stderr
    assert expected in stderr
    assert b"Traceback" not in stderr


async def refused_start(root: Path) -> bytes:
    """Start ``registry serve`` on ``root``; it must exit 2 at once. Its stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry",
        "serve",
        env=clean_environ(
            REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(root),
            REGISTRY_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:  # it started serving: stop it, the test fails
            process.kill()
            await process.wait()
    assert process.returncode == 2, stderr
    assert b"Traceback" not in stderr
    return stderr


async def test_a_read_only_storage_root_stops_start_up_naming_it(tmp_path: Path) -> None:
    # A read-only mount refuses writes to root as well (file modes would not).
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as root:
        stderr = await refused_start(root)
    assert f"cannot write to {root}: Read-only file system".encode() in stderr, stderr


async def test_a_storage_root_that_cannot_be_created_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    root = tmp_path / "a-file" / "registry"
    stderr = await refused_start(root)
    assert f"cannot write to {root}: Not a directory".encode() in stderr, stderr


async def test_a_missing_storage_root_is_created(server: RunningRegistry, tmp_path: Path) -> None:
    # The stock config's root did not exist before start-up: it is made, and works.
    assert (tmp_path / "data").is_dir()


@pytest.mark.parametrize(
    ("key", "content", "problem"),
    [
        ("rootcertbundle", "", "{path} is empty: expected PEM certificates"),
        ("rootcertbundle", "garbage\n", "{path} holds no PEM certificate"),
        ("jwks", "", "{path} is not a JSON document (line 1, column 1)"),
        ("jwks", '{"keys": 5}', "{path}: JWKS document has no 'keys' list"),
        ("jwks", '{"keys": []}', "{path} holds no key"),
    ],
)
async def test_unusable_token_trust_files_name_the_key_and_the_file(
    tmp_path: Path, key: str, content: str, problem: str
) -> None:
    path = tmp_path / "trust"
    path.write_text(content)
    overrides = {
        "REGISTRY_AUTH": "token",
        "REGISTRY_AUTH_TOKEN_REALM": "https://auth.example/token",
        "REGISTRY_AUTH_TOKEN_SERVICE": "registry",
        "REGISTRY_AUTH_TOKEN_ISSUER": "issuer",
        f"REGISTRY_AUTH_TOKEN_{key.upper()}": str(path),
    }
    returncode, stderr = await refused_start_up(
        clean_environ(REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(tmp_path), **overrides)
    )
    assert returncode == 2, stderr
    expected = f"auth.token.{key}: " + problem.format(path=path)
    assert stderr.decode().splitlines()[-1].endswith(expected), stderr


async def test_serves_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "registry.sock"
    env = clean_environ(
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(tmp_path / "data"),
        REGISTRY_HTTP_NET="unix",
        REGISTRY_HTTP_ADDR=str(path),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        status = 0
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(path))) as session:
            for _ in range(200):
                if process.returncode is not None:
                    break
                try:
                    async with session.get("http://registry/v2/") as response:
                        status = response.status
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        assert status == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr
    assert not path.exists()  # removed on exit, as Go's listener does


def children_of(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


async def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(STOCK_CONFIG.format(root=tmp_path / "data", port=port))
    running = RunningRegistry(config, port, clean_environ(PORTSIDE_WORKERS="2"))
    await running.start()
    assert running.process is not None
    supervisor = running.process.pid
    try:
        await _check_workers(running, supervisor)
    finally:  # a failed check must not leave the supervisor and its workers running
        if running.process.returncode is None:
            for pid in children_of(supervisor):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await running.stop(signal.SIGKILL)


async def _check_workers(running: RunningRegistry, supervisor: int) -> None:
    workers = children_of(supervisor)
    assert len(workers) == 2
    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(session.get(running.url + "/v2/") for _ in range(20)))
        assert {response.status for response in statuses} == {200}
        for response in statuses:
            response.release()
    os.kill(workers[0], signal.SIGKILL)  # a worker that dies is replaced
    for _ in range(400):  # the supervisor waits 1 s before replacing; two busy cores
        await asyncio.sleep(0.05)
        replaced = children_of(supervisor)
        if len(replaced) == 2 and workers[0] not in replaced:
            break
    else:
        raise AssertionError(f"the dead worker was not replaced: children {replaced}")
    assert await running.stop(signal.SIGTERM) == 0
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return "Z"
