"""Upstream registries for the pull-through cache's tests, all real and on loopback.

- ``start_reference_token_upstream``: Debian's reference registry 2.8.2 in token mode,
  trusting portside's own tokenauth (users and ACL of ``tests.support.deployments``).
- ``FaultyProxy``: an HTTP proxy in front of a real upstream (or its token server) that
  counts what passes and can cut a blob in the middle, change its bytes, or refuse
  every connection, as a failing network or upstream would.
- ``push_image``, ``push_blob_data``: a plain V2 push of an ``Image``, or of one blob, to
  an open registry.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.htpasswd import format_htpasswd_line
from tests.support.deployments import ACL, ISSUER, PASSWORDS, SERVICE
from tests.support.oci import OCI_MANIFEST, Image
from tests.support.portside_servers import ServerProcess, free_port, run_python_module

_HOP_HEADERS = {"host", "connection", "transfer-encoding", "keep-alive", "content-length"}


async def push_image(
    session: aiohttp.ClientSession, base: str, name: str, tag: str, image: Image
) -> None:
    """Push ``image`` as ``name:tag`` to the open registry at ``base`` (monolithic PUTs)."""
    for digest, data in image.blobs.items():
        await push_blob_data(session, base, name, digest, data)
    await put_manifest(session, base, name, tag, image.manifest)


async def put_manifest(
    session: aiohttp.ClientSession, base: str, name: str, tag: str, manifest: bytes
) -> None:
    """Push the OCI image manifest ``manifest`` as ``name:tag`` to the open registry at
    ``base``."""
    async with session.put(
        f"{base}/v2/{name}/manifests/{tag}",
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    ) as put:
        assert put.status == 201, await put.text()


async def push_blob_data(
    session: aiohttp.ClientSession, base: str, name: str, digest: str, data: bytes
) -> None:
    """Push one blob to ``name`` at the open registry at ``base`` (a monolithic PUT)."""
    async with session.post(f"{base}/v2/{name}/blobs/uploads/") as started:
        assert started.status == 202, await started.text()
        location = started.headers["Location"]
    if location.startswith("/"):
        location = base + location
    body = io.BytesIO(data)  # aiohttp warns (an error here) about big raw bytes
    async with session.put(location, params={"digest": digest}, data=body) as done:
        assert done.status == 201, await done.text()


class FaultyProxy:
    """Forwards every request to ``target``; counts requests by (method, path)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: Counter[tuple[str, str]] = Counter()
        self.cut_blobs_after: int | None = None  # bytes of a blob body, then hang up
        self.corrupt_blobs = False
        self.corrupt_manifests = False
        self.manifest_type = ""  # if set, the Content-Type of every manifest answer
        self.refuse = False  # close every connection without an answer
        self.delay = 0.0  # seconds before answering a blob GET
        self.manifest_delay = 0.0  # seconds before answering for a manifest
        self.blob_chunk_delay = 0.0  # seconds after each 64 KiB of a blob body
        self.blob_piece_times: list[float] = []  # when each of those 64 KiB went out
        self.blob_gets_now = 0  # blob GETs being answered
        self.most_blob_gets_at_once = 0
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._server = TestServer(app, host="127.0.0.1")
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    def blob_gets(self, digest: str) -> int:
        return sum(n for (m, p), n in self.counts.items() if m == "GET" and p.endswith(digest))

    async def start(self) -> None:
        await self._server.start_server()
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._server.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.counts[(request.method, request.path)] += 1
        if request.method != "GET" or "/blobs/sha256:" not in request.path:
            return await self._answer(request)
        self.blob_gets_now += 1
        self.most_blob_gets_at_once = max(self.most_blob_gets_at_once, self.blob_gets_now)
        try:
            return await self._answer(request)
        finally:
            self.blob_gets_now -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("refused by the test")
        is_blob = "/blobs/sha256:" in request.path
        if is_blob and request.method == "GET" and self.delay:
            await asyncio.sleep(self.delay)
        if "/manifests/" in request.path and self.manifest_delay:
            await asyncio.sleep(self.manifest_delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=await request.read() if request.can_read_body else None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_HEADERS:
                    response.headers.add(key, value)
            if self.manifest_type and "/manifests/" in request.path:
                response.headers["Content-Type"] = self.manifest_type
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            sent = 0
            is_manifest = "/manifests/" in request.path
            async for chunk in upstream.content.iter_any():
                if is_blob and self.corrupt_blobs and sent == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if is_manifest and self.corrupt_manifests:
                    chunk = chunk.replace(b'"schemaVersion"', b'"schemaversion"')
                cut = self.cut_blobs_after if is_blob else None
                if cut is not None and sent + len(chunk) >= cut:
                    await response.write(chunk[: cut - sent])
                    await asyncio.sleep(0.2)  # let the bytes out before hanging up
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if is_blob and self.blob_chunk_delay:
                    # A slow upstream: 64 KiB at a time, a pause after each.
                    for start in range(0, len(chunk), 64 * 1024):
                        self.blob_piece_times.append(time.monotonic())
                        await response.write(chunk[start : start + 64 * 1024])
                        await asyncio.sleep(self.blob_chunk_delay)
                else:
                    await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response


@dataclass
class ReferenceUpstream:
    """The reference registry in token mode and the tokenauth it trusts."""

    url: str
    tokenauth: ServerProcess
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(20)
        self.tokenauth.stop()


def start_tokenauth(directory: Path, acl: str = ACL) -> ServerProcess:
    """portside's tokenauth with the deployments' users and ``acl`` (started)."""
    run_python_module(
        "tokenauth",
        "keygen",
        "--key",
        str(directory / "token.key"),
        "--certificate",
        str(directory / "token.crt"),
    )
    (directory / "users.htpasswd").write_text(
        "".join(format_htpasswd_line(u, p) + "\n" for u, p in PASSWORDS.items())
    )
    (directory / "acl.yml").write_text(acl)
    port = free_port()
    (directory / "tokenauth.yml").write_text(
        json.dumps(
            {
                "http": {"addr": f"127.0.0.1:{port}"},
                "token": {
                    "issuer": ISSUER,
                    "services": [SERVICE],
                    "key": "token.key",
                    "certificate": "token.crt",
                },
                "users": ["users.htpasswd"],
                "acl": "acl.yml",
            }
        )
    )
    tokenauth = ServerProcess(
        "tokenauth",
        ["tokenauth", "serve", str(directory / "tokenauth.yml")],
        port,
        "/health",
        directory / "tokenauth.log",
    )
    tokenauth.start()
    return tokenauth


def start_reference_token_upstream(
    registry_bin: str, directory: Path, tokenauth: ServerProcess, realm: str
) -> ReferenceUpstream:
    """``docker-registry serve`` in token mode sending clients to ``realm`` (tokenauth's
    ``/auth``, or a proxy in front of it)."""
    port = free_port()
    config = directory / "reference.yml"
    config.write_text(
        json.dumps(
            {
                "version": "0.1",
                "log": {"level": "error", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": str(directory / "reference-data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
                "auth": {
                    "token": {
                        "realm": realm,
                        "service": SERVICE,
                        "issuer": ISSUER,
                        "rootcertbundle": str(directory / "token.crt"),
                    }
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with open(directory / "reference.log", "ab") as log:
        process = subprocess.Popen(
            [registry_bin, "serve", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    upstream = ReferenceUpstream(f"http://127.0.0.1:{port}", tokenauth, process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        if _status(port, "/v2/") == 401:
            return upstream
        time.sleep(0.05)
    upstream.stop()
    output = (directory / "reference.log").read_text(errors="replace")
    raise AssertionError("docker-registry did not start:\n" + output)


def _status(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (http.client.HTTPException, OSError):
        return None
    finally:
        connection.close()
