"""The HTTP client of one upstream registry: manifests and blobs by remote name, with
authentication (``registry.proxy.auth``) and timeouts; one aiohttp session per upstream.

Failures come out as two exceptions: ``UpstreamMissing`` (the upstream answered that it
has no such thing) and ``UpstreamUnavailable`` (anything else: unreachable, timed out,
refused our credentials, answered 5xx), which the mirror may answer from its cache.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from registry.oci import mediatypes
from registry.oci.digest import Digest
from registry.proxy.auth import UpstreamAuth, UpstreamAuthError, parse_challenge
from registry.storage.manifest_formats import MAX_MANIFEST_SIZE
from shared.reference import is_valid_tag

MANIFEST_ACCEPT = ", ".join(
    (
        mediatypes.OCI_INDEX,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_MANIFEST,
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_SCHEMA1_SIGNED,
        mediatypes.DOCKER_SCHEMA1,
    )
)
USER_AGENT = "portside-mirror"
# How much of a blob's body may wait unread per download before reading pauses (aiohttp
# pauses at twice this). With aiohttp's 64 KiB a download paused and resumed its socket
# for every 128 KiB received (two epoll calls and a loop turn each time), and handed
# over small chunks: a cold pull cost the mirror about 20% more CPU per MB.
READ_BUFFER = 1024 * 1024
TAGS_PAGE = 1000
MAX_TAG_PAGES = 100
MAX_TAGS_BODY = 4 * 1024 * 1024
# The query of a ``Link: </v2/name/tags/list?n=..&last=..>; rel="next"`` header.
_NEXT = re.compile(r'<[^>?]*\?([^>]*)>\s*;\s*rel="?next"?')


class UpstreamError(Exception):
    pass


class UpstreamMissing(UpstreamError):
    """The upstream answered 404: it does not have what was asked for."""


class UpstreamUnavailable(UpstreamError):
    """The upstream could not give an answer; the message names why, never a secret."""


@dataclass(frozen=True, slots=True)
class UpstreamManifest:
    media_type: str
    body: bytes  # empty for a HEAD
    digest: str | None  # the upstream's Docker-Content-Digest, if it sent one


class UpstreamClient:
    def __init__(self, remote_url: str, username: str, password: str, timeout: float) -> None:
        self.remote_url = remote_url
        # Connect and per-read timeouts only: a large blob may take minutes in total,
        # but an upstream that stops sending for ``timeout`` is given up on.
        limit = timeout or None  # 0: no limit, as for Distribution's durations
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, connect=limit, sock_connect=limit, sock_read=limit
            ),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
        )
        self._auth = UpstreamAuth(
            self._session, username, password, https_only=remote_url.startswith("https://")
        )

    async def close(self) -> None:
        await self._session.close()

    async def manifest(self, name: str, reference: str, head: bool) -> UpstreamManifest:
        """The manifest ``name:reference`` (its body bounded by MAX_MANIFEST_SIZE)."""
        method = "HEAD" if head else "GET"
        async with self._request(
            method, name, f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT}
        ) as response:
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            body = b""
            if not head:
                body = await _bounded(response, MAX_MANIFEST_SIZE)
            return UpstreamManifest(media_type, body, response.headers.get("Docker-Content-Digest"))

    async def tags(self, name: str) -> list[str]:
        """Every tag of ``name``, following the upstream's pagination (bounded)."""
        tags: list[str] = []
        query = f"n={TAGS_PAGE}"
        for _ in range(MAX_TAG_PAGES):
            async with self._request("GET", name, f"tags/list?{query}") as response:
                page = await _bounded(response, MAX_TAGS_BODY)
                link = response.headers.get("Link", "")
            try:
                listed = json.loads(page).get("tags") or []
            except (ValueError, AttributeError):
                raise UpstreamUnavailable("upstream sent an unreadable tag list") from None
            if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
                raise UpstreamUnavailable("upstream sent an unreadable tag list")
            # Only names a client could ask for again: nothing else is passed on.
            tags += [tag for tag in listed if is_valid_tag(tag)]
            found = _NEXT.search(link)
            if found is None or not listed:
                return tags
            query = found.group(1)
        raise UpstreamUnavailable("upstream tag list too long")

    async def blob_size(self, name: str, digest: Digest) -> int:
        async with self._request("HEAD", name, f"blobs/{digest}") as response:
            return _content_length(response)

    @contextlib.asynccontextmanager
    async def blob(
        self, name: str, digest: Digest
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """The blob's size and its bytes as they arrive; read errors are
        ``UpstreamUnavailable``."""
        async with self._request("GET", name, f"blobs/{digest}") as response:
            yield _content_length(response), _chunks(response)

    @contextlib.asynccontextmanager
    async def _request(
        self, method: str, name: str, path: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        response = await self._open(method, name, path, dict(headers or {}))
        try:
            if response.status == 404:
                raise UpstreamMissing(f"upstream has no {path}")
            if response.status != 200:
                raise UpstreamUnavailable(f"upstream answered {response.status}")
            yield response
        finally:
            response.release()

    async def _open(
        self, method: str, name: str, path: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """The upstream's answer, after answering its challenge once if it sent one."""
        url = f"{self.remote_url}/v2/{name}/{path}"
        scope = f"repository:{name}:pull"
        try:
            authorization = self._auth.cached(scope)
            if authorization is not None:
                headers["Authorization"] = authorization
            # Registries redirect blobs to a CDN: followed, and aiohttp drops the
            # Authorization header when the host changes, so no credential leaks there.
            response = await self._session.request(method, url, headers=headers)
            if response.status != 401:
                return response
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            response.release()
            answer = None if challenge is None else await self._auth.answer(challenge, scope)
            if answer is None:
                raise UpstreamUnavailable("upstream refused access")
            headers["Authorization"] = answer
            return await self._session.request(method, url, headers=headers)
        except UpstreamAuthError as error:
            raise UpstreamUnavailable(f"upstream authentication failed: {error}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise UpstreamUnavailable(f"upstream unreachable: {type(error).__name__}") from None


def _content_length(response: aiohttp.ClientResponse) -> int:
    if response.content_length is None:
        raise UpstreamUnavailable("upstream sent no Content-Length")
    return response.content_length


async def _bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamUnavailable("upstream manifest too large")
    parts: list[bytes] = []
    size = 0
    async for chunk in _chunks(response):
        size += len(chunk)
        if size > limit:
            raise UpstreamUnavailable("upstream manifest too large")
        parts.append(chunk)
    return b"".join(parts)


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's bytes as the socket received them: each chunk is one receive (at most
    asyncio's 256 KiB), handed on as it is. ``iter_any`` joined everything waiting in the
    read buffer into a new bytes object (up to READ_BUFFER at a time), a copy of every
    byte that took a sixth of the mirror's event loop on a cold pull."""
    try:
        async for chunk, _ in response.content.iter_chunks():
            if chunk:  # an empty chunk only marks the end of a chunked-encoding chunk
                yield chunk
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise UpstreamUnavailable(f"upstream broke off: {type(error).__name__}") from None
