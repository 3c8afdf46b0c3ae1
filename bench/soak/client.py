"""A soak client: logs in, pushes and pulls images as ``docker`` does, and retries what a
real client retries.

Every request goes through ``SoakClient.send``: a connection error or an nginx 502/503/504
is retried (a bounded number of times, backing off), a 401 with a Bearer challenge sends
the client to the token server for that scope (logging in again when its token is no
longer good or the token server it used was killed), and any other status the operation
does not expect is a hard error. A blob upload that breaks half-way starts again from its
POST, as docker restarts a layer, since where an interrupted chunk ended is unknown.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
from yarl import URL

from bench.client import MANIFEST_ACCEPT
from bench.soak.stats import RETRYABLE_STATUSES, Recorder

ATTEMPTS = 10
BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0
_CHALLENGE_PARAMETER = re.compile(r'(\w+)="([^"]*)"')
_REPOSITORY = re.compile(r"/v2/(.+?)/(?:blobs|manifests|tags)/")
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class HardError(RuntimeError):
    """An answer a correct registry never gives here: the soak fails."""


class Interrupted(RuntimeError):
    """A retryable failure the caller handles by starting a larger step again."""


class OutOfRetries(RuntimeError):
    """Every attempt failed with a retryable error."""


@dataclass(frozen=True)
class Image:
    """An image as pushed: its manifest's bytes and every blob it references."""

    repo: str
    tag: str
    manifest: bytes
    digest: str
    blobs: Mapping[str, bytes]  # digest → content


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _access(method: str) -> str:
    return "pull" if method in ("GET", "HEAD") else "push"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class SoakClient:
    """One user's client against the registries' balancer, with its own connections."""

    session: aiohttp.ClientSession
    base: str
    user: str
    password: str
    recorder: Recorder
    # By (repository, "pull" or "push"), as docker keeps one token per repository.
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    def _basic(self) -> str:
        raw = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {raw}"

    async def _once(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]
    ) -> Answer:
        self.recorder.attempt()
        async with self.session.request(
            method, URL(url, encoded=True), data=data, headers=headers, allow_redirects=True
        ) as response:
            return Answer(response.status, response.headers.copy(), await response.read())

    async def _retrying(
        self,
        operation: str,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str],
        retry: bool,
    ) -> Answer:
        """One request, retried while it fails retryably (``retry``), else Interrupted."""
        for attempt in range(ATTEMPTS):
            try:
                answer = await self._once(method, url, data, headers)
                if answer.status not in RETRYABLE_STATUSES:
                    return answer
                kind = str(answer.status)
            except CONNECTION_ERRORS as error:
                kind = type(error).__name__
            self.recorder.retry(kind)
            if not retry:
                raise Interrupted(f"{method} {operation}: {kind}")
            delay = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        self.recorder.gave_up.append(f"{method} {operation}")
        raise OutOfRetries(f"{method} {operation}: {ATTEMPTS} attempts failed")

    async def send(
        self,
        operation: str,
        method: str,
        path_or_url: str,
        expect: frozenset[int],
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Answer:
        """A registry request with token auth and retries; HardError unless the final
        status is in ``expect``."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        started = time.monotonic()
        repository = _REPOSITORY.search(URL(url, encoded=True).path)
        key = (repository.group(1) if repository else "", _access(method))
        for _ in range(2):  # the second time with a fresh token
            sent = dict(headers or {})
            if key in self.tokens:
                sent["Authorization"] = f"Bearer {self.tokens[key]}"
            answer = await self._retrying(operation, method, url, data, sent, retry)
            challenge = answer.headers.get("WWW-Authenticate", "")
            if answer.status != 401 or not challenge.startswith("Bearer "):
                break
            self.tokens[key] = await self.login(dict(_CHALLENGE_PARAMETER.findall(challenge)))
        if answer.status not in expect:
            message = f"{method} {URL(url).path}: {answer.status} {answer.body[:200]!r}"
            self.recorder.hard(message)
            raise HardError(message)
        self.recorder.timed(operation, time.monotonic() - started)
        return answer

    async def login(self, challenge: Mapping[str, str]) -> str:
        """A token for the challenge's scope: docker's GET to the realm, with Basic
        credentials."""
        scope = challenge.get("scope", "")
        query = f"service={quote(challenge.get('service', ''))}&account={quote(self.user)}"
        if scope:
            query += f"&scope={quote(scope)}"
        started = time.monotonic()
        answer = await self._retrying(
            "login",
            "GET",
            f"{challenge['realm']}?{query}",
            None,
            {"Authorization": self._basic()},
            retry=True,
        )
        if answer.status != 200:
            message = f"login: {answer.status} {answer.body[:200]!r}"
            self.recorder.hard(message)
            raise HardError(message)
        self.recorder.timed("login", time.monotonic() - started)
        return str(json.loads(answer.body)["token"])

    async def ping(self) -> None:
        """``docker login``: GET /v2/, and log in as its challenge says."""
        await self.send("ping", "GET", "/v2/", frozenset({200, 401}))

    async def push_blob(self, repo: str, data: bytes, digest: str) -> None:
        """HEAD, then POST, PATCH (with Content-Range) and PUT, started again from the
        POST whenever one of them is interrupted."""
        head = await self.send(
            "blob_head", "HEAD", f"/v2/{repo}/blobs/{digest}", frozenset({200, 404})
        )
        if head.status == 200:
            return
        started = time.monotonic()
        for _ in range(ATTEMPTS):
            try:
                await self._upload(repo, data, digest)
            except Interrupted:
                continue
            self.recorder.bytes_pushed += len(data)
            self.recorder.timed("blob_upload", time.monotonic() - started)
            return
        self.recorder.gave_up.append(f"upload of {digest} to {repo}")
        raise OutOfRetries(f"upload of {digest} to {repo}")

    async def _upload(self, repo: str, data: bytes, digest: str) -> None:
        start = await self.send(
            "upload_start", "POST", f"/v2/{repo}/blobs/uploads/", frozenset({202})
        )
        location = self._absolute(start.headers["Location"])
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"0-{len(data) - 1}",
        }
        patch = await self.send(
            "upload_patch",
            "PATCH",
            location,
            frozenset({202, 404, 416}),
            data=data,
            headers=headers,
            retry=False,
        )
        self._lost(patch)
        if patch.status == 416:
            # nginx resent the chunk after the instance that stored it died unanswered:
            # the registry says how much it has; resume from there, as clients do.
            if patch.headers.get("Range") != f"0-{len(data) - 1}":
                self.recorder.retry("416")
                raise Interrupted(f"PATCH {location}: 416, Range {patch.headers.get('Range')}")
            self.recorder.retry("416 resumed")
        else:
            location = self._absolute(patch.headers["Location"])
        separator = "&" if "?" in location else "?"
        done = await self.send(
            "upload_put",
            "PUT",
            f"{location}{separator}digest={quote(digest)}",
            frozenset({201, 404}),
            retry=False,
        )
        self._lost(done)

    def _lost(self, answer: Answer) -> None:
        """Interrupted if the upload is gone: an instance killed while it committed the
        upload (after moving its data, before linking the blob) leaves nothing to
        finish, and a resent request says so; docker then pushes the layer again."""
        if answer.status != 404:
            return
        if b'"BLOB_UPLOAD_UNKNOWN"' not in answer.body:
            message = f"upload: 404 {answer.body[:200]!r}"
            self.recorder.hard(message)
            raise HardError(message)
        self.recorder.retry("404 upload lost")
        raise Interrupted("upload lost")

    def _absolute(self, location: str) -> str:
        return location if "://" in location else self.base + location

    async def push_image(self, image: Image) -> None:
        """Every blob (all at once, as docker pushes layers), then the manifest; returns
        once the manifest PUT got 201 (the push is acknowledged)."""
        started = time.monotonic()
        await asyncio.gather(
            *(self.push_blob(image.repo, data, digest) for digest, data in image.blobs.items())
        )
        await self.send(
            "manifest_put",
            "PUT",
            f"/v2/{image.repo}/manifests/{image.tag}",
            frozenset({201}),
            data=image.manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        self.recorder.timed("image_push", time.monotonic() - started)

    async def pull_image(self, image: Image) -> None:
        """The manifest by tag, then every blob, each checked byte for byte."""
        started = time.monotonic()
        answer = await self.send(
            "manifest_get",
            "GET",
            f"/v2/{image.repo}/manifests/{image.tag}",
            frozenset({200}),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if answer.body != image.manifest:
            self.recorder.hard(f"{image.repo}:{image.tag}: the manifest changed")
            raise HardError(f"{image.repo}:{image.tag}: the manifest changed")
        for digest, data in image.blobs.items():
            blob = await self.send(
                "blob_get", "GET", f"/v2/{image.repo}/blobs/{digest}", frozenset({200})
            )
            if blob.body != data:
                self.recorder.hard(f"{image.repo}@{digest}: wrong content")
                raise HardError(f"{image.repo}@{digest}: wrong content")
            self.recorder.bytes_pulled += len(data)
        self.recorder.timed("image_pull", time.monotonic() - started)
