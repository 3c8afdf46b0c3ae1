"""A signing-key rotation while clients keep pushing and pulling: not one request fails.

tokenauth runs as ``tokenauth serve`` with a key directory; the registries (portside, and
Debian's reference registry 2.8.2, which checks ``x5c`` against its ``rootcertbundle``)
trust the directory's ``bundle.crt`` (portside re-reads it when a rotation rewrites it, and
takes two rotations here; the reference reads it at start and takes one). Clients take a
fresh token for every push and pull, as docker does per operation, and one keeps a token
signed before the first rotation and pulls with it after.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from yarl import URL

from shared.htpasswd import format_htpasswd_line
from tests.support.logins import basic
from tests.support.portside_servers import ServerProcess, free_port, run_python_module
from tests.support.tools import require_tool

SERVICE, ISSUER = "rotation.test", "rotation-issuer"
USER, PASSWORD = "alice", "alice-rotation-pw"
ACL = 'acl:\n  - match: {account: alice, name: "team/*"}\n    actions: ["*"]\n'
ROTATED_WITHIN = 30.0  # seconds for tokenauth to sign with the new key (it looks every 1 s)


class Registry:
    """A registry trusting ``keys/bundle.crt``; ``rotations``: how many it takes in the
    test (portside re-reads the bundle each rotation rewrites; the reference reads it at
    start only, so it trusts one rotation ahead)."""

    def __init__(self, url: str, rotations: int) -> None:
        self.url, self.rotations = url, rotations


@pytest.fixture
def tokenauth(tmp_path: Path) -> Iterator[ServerProcess]:
    run_python_module("tokenauth", "keygen", "--dir", str(tmp_path / "keys"))
    (tmp_path / "users").write_text(format_htpasswd_line(USER, PASSWORD, cost=4) + "\n")
    (tmp_path / "acl.yml").write_text(ACL)
    port = free_port()
    config = {
        "http": {"addr": f"127.0.0.1:{port}"},
        "token": {"issuer": ISSUER, "services": [SERVICE], "keydir": "keys"},
        "users": ["users"],
        "acl": "acl.yml",
    }
    (tmp_path / "tokenauth.yml").write_text(json.dumps(config))
    server = ServerProcess(
        "tokenauth",
        ["tokenauth", "serve", str(tmp_path / "tokenauth.yml")],
        port,
        "/health",
        tmp_path / "tokenauth.log",
    )
    server.start()
    yield server
    server.stop()


def registry_config(tmp_path: Path, port: int, realm: str) -> Path:
    path = tmp_path / f"registry-{port}.yml"
    config = {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / f"data-{port}")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {
            "token": {
                "realm": realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(tmp_path / "keys" / "bundle.crt"),
            }
        },
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(params=["portside", "reference"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, tokenauth: ServerProcess
) -> Iterator[Registry]:
    port = free_port()
    config = registry_config(tmp_path, port, tokenauth.url + "/auth")
    if request.param == "portside":
        server = ServerProcess(
            "registry", ["registry", "serve", str(config)], port, "/", tmp_path / "registry.log"
        )
        server.start()
        yield Registry(server.url, rotations=2)
        server.stop()
        return
    binary = require_tool("docker-registry")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log = open(tmp_path / "reference.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([binary, "serve", str(config)], env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_listening(port, process)
        yield Registry(url, rotations=1)
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("docker-registry exited at start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("docker-registry did not listen")


def used_keys(clients: list[Client]) -> set[str]:
    """The keys (kid) whose tokens served at least 5 requests."""
    return {kid for c in clients for kid, count in c.kids.items() if count >= 5}


class Client:
    """Pushes and pulls through the token flow, recording every unexpected answer."""

    def __init__(self, session: aiohttp.ClientSession, registry: str, realm: str) -> None:
        self.session, self.registry, self.realm = session, registry, realm
        self.failures: list[str] = []
        self.kids: dict[str, int] = {}  # kid -> requests served with a token it signed
        self.first_token: str | None = None

    async def token(self, repository: str) -> str:
        params = {"service": SERVICE, "scope": f"repository:{repository}:pull,push"}
        async with self.session.get(
            self.realm, params=params, headers=basic(USER, PASSWORD)
        ) as response:
            body = await response.json()
            if response.status != 200:
                self.failures.append(f"token: {response.status} {body}")
                return ""
        token = str(body["token"])
        self.first_token = self.first_token or token
        return token

    async def expect(self, method: str, url: str, token: str, status: int, **kw: object) -> None:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}  # type: ignore[dict-item]
        async with self.session.request(method, url, headers=headers, **kw) as response:  # type: ignore[arg-type]
            await response.read()
            if response.status != status:
                self.failures.append(f"{method} {url}: {response.status}")
                return
        kid = str(jwt.get_unverified_header(token)["kid"])
        self.kids[kid] = self.kids.get(kid, 0) + 1

    async def upload(self, base: str, token: str, data: bytes) -> None:
        """POST then PUT with the digest: the monolithic upload every registry takes."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.post(f"{base}/blobs/uploads/", headers=headers) as response:
            await response.read()
            if response.status != 202:
                self.failures.append(f"POST {base}/blobs/uploads/: {response.status}")
                return
            location = response.url.join(URL(response.headers["Location"]))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        url = str(location.update_query(digest=digest))
        await self.expect("PUT", url, token, 201, data=data)

    async def round(self, repository: str, n: int) -> None:
        """Push a blob and a manifest, then pull both, with one fresh token."""
        token = await self.token(repository)
        if not token:
            return
        base = f"{self.registry}/v2/{repository}"
        data = f"layer {repository} {n}".encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        await self.upload(base, token, data)
        config = b"{}"
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest,
                        "size": len(data),
                    }
                ],
            }
        ).encode()
        await self.upload(base, token, config)
        content_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        url = f"{base}/manifests/v{n}"
        await self.expect("PUT", url, token, 201, data=manifest, headers=content_type)
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        await self.expect("GET", f"{base}/manifests/v{n}", token, 200, headers=accept)
        await self.expect("GET", f"{base}/blobs/{digest}", token, 200)


async def test_rotation_under_push_and_pull_fails_no_request(
    tmp_path: Path, tokenauth: ServerProcess, registry: Registry
) -> None:
    keys = tmp_path / "keys"
    old = (keys / "current.crt").read_bytes()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(60)) as session:
        clients = [Client(session, registry.url, tokenauth.url + "/auth") for _ in range(3)]

        async def loop(index: int, client: Client) -> None:
            n = 0
            while not stop.is_set():
                await client.round(f"team/app{index}", n)
                n += 1

        tasks = [asyncio.create_task(loop(i, c)) for i, c in enumerate(clients)]
        try:
            await asyncio.sleep(1.0)
            for rotation in range(1, registry.rotations + 1):
                await asyncio.to_thread(
                    run_python_module, "tokenauth", "keygen", "--dir", str(keys), "--rotate"
                )
                deadline = time.monotonic() + ROTATED_WITHIN
                while len(used_keys(clients)) < rotation + 1:
                    failures = [f for c in clients for f in c.failures]
                    assert time.monotonic() < deadline, f"new key never used: {failures[:5]}"
                    await asyncio.sleep(0.5)
                if rotation == 1:
                    # A token signed before, by what is now the previous key, still pulls.
                    assert (keys / "previous.crt").read_bytes() == old
                    first = clients[0].first_token
                    assert first is not None
                    url = f"{registry.url}/v2/team/app0/manifests/v0"
                    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
                    await clients[0].expect("GET", url, first, 200, headers=accept)
                await asyncio.sleep(1.0)  # more rounds on the new key
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    failures = [f for c in clients for f in c.failures]
    assert failures == [], failures[:10]
