"""The registry client the scenarios drive: aiohttp, streaming from files, verifying pulls.

Bodies are read from a file in large pieces (the page cache serves them), never held whole
in memory; a pull is hashed in a worker thread while the next piece arrives, as the
registries hash pushes, so the client's own hashing overlaps its receiving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import quote

import aiohttp
from yarl import URL

PIECE = 4 * 1024 * 1024  # file reads for request bodies
HASH_PIECE = 1024 * 1024  # what a pull hands to the hashing thread at a time
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = ", ".join(
    (
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


class RegistryResponseError(RuntimeError):
    """A registry answered with a status the scenario did not expect."""


def new_session(connections: int = 100, read_timeout: float = 30) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        read_bufsize=PIECE,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout),
    )


async def file_body(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``path`` from ``start``, in pieces."""
    with path.open("rb", buffering=0) as file:
        file.seek(start)
        remaining = length
        while remaining > 0:
            piece = file.read(min(PIECE, remaining))
            if not piece:
                raise RuntimeError(f"{path} ended {remaining} bytes early")
            remaining -= len(piece)
            yield piece


async def _check(response: aiohttp.ClientResponse, *expected: int) -> None:
    if response.status not in expected:
        text = (await response.read())[:300].decode(errors="replace")
        raise RegistryResponseError(
            f"{response.method} {response.url.path}: {response.status} {text}"
        )


def _with_digest(location: str, digest: str) -> URL:
    separator = "&" if "?" in location else "?"
    return URL(f"{location}{separator}digest={quote(digest)}", encoded=True)


class RegistryClient:
    """The V2 operations a scenario needs, against one registry (optionally with a token)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None):
        self.session = session
        self.base = base
        self.headers: dict[str, str] = {}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def _url(self, path: str) -> URL:
        return URL(self.base + path, encoded=True)

    def _absolute(self, location: str) -> str:
        return location if "://" in location else self.base + location

    async def blob_exists(self, repo: str, digest: str) -> bool:
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        async with self.session.head(url, headers=self.headers) as response:
            await _check(response, 200, 404)
            return response.status == 200

    async def start_upload(self, repo: str) -> str:
        url = self._url(f"/v2/{repo}/blobs/uploads/")
        async with self.session.post(url, headers=self.headers) as response:
            await _check(response, 202)
            return self._absolute(response.headers["Location"])

    async def push_file(self, repo: str, path: Path, size: int, digest: str) -> None:
        """Monolithic: POST, then one PUT carrying the whole blob."""
        location = await self.start_upload(repo)
        headers = {**self.headers, "Content-Type": "application/octet-stream"}
        headers["Content-Length"] = str(size)
        async with self.session.put(
            _with_digest(location, digest), data=file_body(path, 0, size), headers=headers
        ) as response:
            await _check(response, 201)

    async def push_file_chunked(
        self, repo: str, path: Path, size: int, digest: str, chunk: int
    ) -> None:
        """POST, a PATCH per ``chunk`` bytes with Content-Range, then an empty PUT."""
        location = await self.start_upload(repo)
        for start in range(0, size, chunk):
            length = min(chunk, size - start)
            headers = {
                **self.headers,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{start}-{start + length - 1}",
            }
            async with self.session.patch(
                URL(location, encoded=True), data=file_body(path, start, length), headers=headers
            ) as response:
                await _check(response, 202)
                location = self._absolute(response.headers["Location"])
        async with self.session.put(
            _with_digest(location, digest), headers={**self.headers, "Content-Length": "0"}
        ) as response:
            await _check(response, 201)

    async def pull_verify(self, repo: str, digest: str, size: int) -> None:
        """GET a blob, hashing it while it arrives; raises unless size and digest match."""
        await pull_verify(
            self.session, self._url(f"/v2/{repo}/blobs/{digest}"), digest, size, self.headers
        )

    async def pull_discard(self, repo: str, digest: str, size: int) -> None:
        await pull_discard(
            self.session, self._url(f"/v2/{repo}/blobs/{digest}"), size, self.headers
        )

    async def push_bytes(self, repo: str, data: bytes, digest: str) -> None:
        """As docker pushes a layer: HEAD, POST, PATCH with the data, PUT with the digest."""
        if await self.blob_exists(repo, digest):
            return
        location = await self.start_upload(repo)
        headers = {**self.headers, "Content-Type": "application/octet-stream"}
        async with self.session.patch(
            URL(location, encoded=True), data=data, headers=headers
        ) as response:
            await _check(response, 202)
            location = self._absolute(response.headers["Location"])
        async with self.session.put(
            _with_digest(location, digest), headers={**self.headers, "Content-Length": "0"}
        ) as response:
            await _check(response, 201)

    async def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> None:
        headers = {**self.headers, "Content-Type": media_type}
        url = self._url(f"/v2/{repo}/manifests/{tag}")
        async with self.session.put(url, data=body, headers=headers) as response:
            await _check(response, 201)

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> bytes:
        url = self._url(path)
        async with self.session.get(url, headers={**self.headers, **(headers or {})}) as response:
            await _check(response, 200)
            return await response.read()


async def pull_verify(
    session: aiohttp.ClientSession,
    url: URL | str,
    digest: str,
    size: int,
    headers: Mapping[str, str] | None = None,
) -> None:
    """GET ``url``, hashing in a thread while the next piece arrives (about twice as fast
    here as hashing in the event loop); raises unless size and digest match."""
    loop = asyncio.get_running_loop()
    hasher = hashlib.sha256()
    pending: asyncio.Future[None] | None = None
    received = 0
    async with session.get(url, headers=headers) as response:
        await _check(response, 200)
        buffered: list[bytes] = []
        buffered_size = 0
        # iter_any hands over what arrived without re-slicing: faster than iter_chunked.
        async for data in response.content.iter_any():
            buffered.append(data)
            buffered_size += len(data)
            if buffered_size >= HASH_PIECE:
                piece = b"".join(buffered)
                buffered, buffered_size = [], 0
                received += len(piece)
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, hasher.update, piece)
        if pending is not None:
            await pending
        tail = b"".join(buffered)
        hasher.update(tail)
        received += len(tail)
    if received != size or f"sha256:{hasher.hexdigest()}" != digest:
        raise RegistryResponseError(f"pull of {digest}: got {received} bytes, wrong digest")


async def pull_discard(
    session: aiohttp.ClientSession,
    url: URL | str,
    size: int,
    headers: Mapping[str, str] | None = None,
) -> None:
    """GET ``url`` and only count the bytes: what the server can send when the client
    does not hash."""
    received = 0
    async with session.get(url, headers=headers) as response:
        await _check(response, 200)
        async for data in response.content.iter_any():
            received += len(data)
    if received != size:
        raise RegistryResponseError(f"pull of {url}: got {received} bytes, not {size}")


def image_manifest(config: tuple[bytes, str], layers: list[tuple[bytes, str]]) -> bytes:
    """An OCI image manifest for a config and layers given as (data, digest)."""

    def descriptor(media_type: str, data: bytes, digest: str) -> dict[str, object]:
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, *config),
        "layers": [descriptor(OCI_LAYER, data, digest) for data, digest in layers],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()
