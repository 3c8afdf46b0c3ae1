"""A push/delete/re-push storm against a registry that collects garbage online, and the
checks that follow it (docs/online-gc.md).

Clients push images that share layers the way docker does (HEAD each blob, upload only
what is missing, then PUT the manifest), delete some images and push again, while the
registry collects every fraction of a second with a short grace period. A push refused
with MANIFEST_BLOB_UNKNOWN or 503 (a blob collected between the HEAD and the PUT, or a
collector busy with it) is retried from the HEADs. Afterwards every manifest in the
store must be fully pullable (every blob's digest verified), and once the grace period
has passed every blob no manifest references must be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from registry.config import load_config
from registry.oci.digest import Digest, parse_digest
from registry.storage.references import references_of
from registry.wiring import create_storage
from tests.support.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from tests.support.portside_servers import ServerProcess, filesystem_registry

REPOSITORIES = [f"stress/r{index}" for index in range(4)]
POOL = 40  # layers the images draw from: shared between clients and repositories


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(index: int) -> bytes:
    return hashlib.sha256(b"pool layer %d" % index).digest() * (32 + 8 * index)


@dataclass
class Storm:
    """Counts of what the clients did, for the test's assertions and its message."""

    pushed: int = 0
    deleted: int = 0
    refused: int = 0  # pushes refused and retried (a blob collected under a client)
    reasons: Counter[str] = field(default_factory=Counter)  # status and code of refusals
    abandoned: int = 0  # images given up after too many refusals
    uploads: int = 0
    skipped: int = 0  # blobs a HEAD said exist: not uploaded
    errors: list[str] = field(default_factory=list)


async def _status(session: aiohttp.ClientSession, method: str, url: str, **kw: object) -> int:
    async with session.request(method, url, **kw) as response:  # type: ignore[arg-type]
        await response.read()
        return response.status


async def _push_blob(session: aiohttp.ClientSession, name: str, data: bytes, storm: Storm) -> None:
    digest = _digest(data)
    if await _status(session, "HEAD", f"/v2/{name}/blobs/{digest}") == 200:
        storm.skipped += 1
        return
    source = random.choice(REPOSITORIES)
    if source != name and random.random() < 0.3:  # docker mounts from a sibling first
        async with session.post(
            f"/v2/{name}/blobs/uploads/", params={"mount": digest, "from": source}
        ) as response:
            await response.read()
            if response.status == 201:
                storm.skipped += 1
                return
            location = response.headers.get("Location", "")
            if response.status == 202 and location:
                await _finish_upload(session, location, digest, data)
                storm.uploads += 1
                return
    async with session.post(f"/v2/{name}/blobs/uploads/") as response:
        body = await response.read()
        if response.status != 202:
            raise AssertionError(f"upload of {digest}: {response.status} {body[:300]!r}")
        location = response.headers["Location"]
    await _finish_upload(session, location, digest, data)
    storm.uploads += 1


async def _finish_upload(
    session: aiohttp.ClientSession, location: str, digest: str, data: bytes
) -> None:
    async with session.put(
        location,
        params={"digest": digest},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    ) as response:
        body = await response.read()
        if response.status != 201:
            raise AssertionError(f"upload of {digest}: {response.status} {body[:300]!r}")


def _image(client: int, serial: int) -> tuple[bytes, list[bytes], bytes]:
    config = json.dumps({"client": client, "serial": serial, "os": "linux"}).encode()
    layers = [_layer(i) for i in random.sample(range(POOL), 3)]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": _digest(b), "size": len(b)} for b in layers
            ],
        }
    ).encode()
    return config, layers, manifest


async def _client(
    session: aiohttp.ClientSession, client: int, until: float, pause: float, storm: Storm
) -> None:
    serial = 0
    deleted: list[tuple[str, bytes, list[bytes], bytes]] = []
    while time.monotonic() < until:
        if deleted and random.random() < 0.4:
            # Push again an image deleted a while ago: its blobs may be condemned now.
            name, config, layers, manifest = deleted.pop(random.randrange(len(deleted)))
        else:
            serial += 1
            name = random.choice(REPOSITORIES)
            config, layers, manifest = _image(client, serial)
        pushed = await _push_image(session, name, (config, *layers), manifest, pause, storm)
        if pushed is None:
            return
        if pushed and random.random() < 0.6:
            await asyncio.sleep(random.uniform(0, pause / 2))
            async with session.delete(f"/v2/{name}/manifests/{_digest(manifest)}") as response:
                body = await response.read()
            if response.status != 202:
                storm.errors.append(f"DELETE manifest: {response.status} {body[:300]!r}")
                return
            storm.deleted += 1
            deleted.append((name, config, layers, manifest))


async def _push_image(
    session: aiohttp.ClientSession,
    name: str,
    blobs: tuple[bytes, ...],
    manifest: bytes,
    pause: float,
    storm: Storm,
) -> bool | None:
    """Push as docker does, retrying a refused manifest: whether it was acknowledged
    (False: given up after six refusals); None on an unexpected error."""
    for _attempt in range(6):
        for blob in blobs:
            await _push_blob(session, name, blob, storm)
        # The window the race lives in: told "exists", the client takes its time.
        await asyncio.sleep(random.uniform(0, pause))
        async with session.put(
            f"/v2/{name}/manifests/{_digest(manifest)[7:19]}",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        ) as response:
            body = await response.read()
        if response.status == 201:
            storm.pushed += 1
            return True
        if response.status in (400, 503) and (
            b"MANIFEST_BLOB_UNKNOWN" in body or b"UNAVAILABLE" in body
        ):
            storm.refused += 1
            storm.reasons[f"{response.status} {body[:160]!r}"] += 1
            continue
        storm.errors.append(f"PUT manifest: {response.status} {body[:300]!r}")
        return None
    storm.abandoned += 1
    return False


async def storm(base_url: str, *, clients: int, seconds: float, pause: float) -> Storm:
    """Run ``clients`` concurrent clients against ``base_url`` for ``seconds``."""
    counts = Storm()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_client(session, index, until, pause, counts) for index in range(clients))
        )
    return counts


async def _pull(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise AssertionError(f"GET {url}: {response.status} {body[:300]!r}")
        return body


async def assert_everything_pulls(base_url: str, environ: Mapping[str, str]) -> set[Digest]:
    """Every manifest revision in the store pulls fully, each blob's digest verified;
    every tag resolves. The digests the store's manifests reference (themselves
    included)."""
    registry = create_storage(load_config(None, environ))
    referenced: set[Digest] = set()
    try:
        async with aiohttp.ClientSession(base_url) as session:
            for name in REPOSITORIES:
                view = registry.repository(name)
                revisions = [d async for d in view.blobs.revisions.all()]
                for digest in revisions:
                    body = await _pull(session, f"/v2/{name}/manifests/{digest}")
                    assert _digest(body) == str(digest)
                    referenced.add(digest)
                    for blob in references_of(body).blobs:
                        data = await _pull(session, f"/v2/{name}/blobs/{blob}")
                        assert _digest(data) == str(blob), f"{name}@{digest}: {blob} corrupt"
                        referenced.add(blob)
                async with session.get(f"/v2/{name}/tags/list") as response:
                    tags = (await response.json()).get("tags") or [] if response.ok else []
                for tag in tags:
                    body = await _pull(session, f"/v2/{name}/manifests/{tag}")
                    assert parse_digest(_digest(body)) in revisions, (name, tag)
    finally:
        await registry.close()
    return referenced


async def stored_blobs(environ: Mapping[str, str]) -> set[Digest]:
    registry = create_storage(load_config(None, environ))
    try:
        return {digest async for digest in registry.blob_store.all()}
    finally:
        await registry.close()


async def wait_until_collected(
    environ: Mapping[str, str], referenced: set[Digest], within: float
) -> set[Digest]:
    """Wait until the store holds no blob outside ``referenced``; what is left over."""
    deadline = time.monotonic() + within
    while True:
        extra = await stored_blobs(environ) - referenced
        if not extra or time.monotonic() > deadline:
            return extra
        await asyncio.sleep(0.25)


async def collections_logged(logs: Sequence[Path], within: float) -> list[int]:
    """How many runs each log reports as having deleted something, once at least one does
    (or ``within`` seconds have passed).

    A serving registry logs a run after its collecting child has answered: the blobs may
    be gone from the store a moment before the line is written, and a test that stopped
    the registry right then lost the line (and failed under load).
    """
    deadline = time.monotonic() + within
    while True:
        counts = [
            path.read_text(errors="replace").count("garbage collection deleted")
            if path.exists()
            else 0
            for path in logs
        ]
        if sum(counts) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.25)


@dataclass
class ServedStore:
    """A registry serving a filesystem store (deletes on, a grace period, no collection of
    its own), and what a ``registry garbage-collect`` run against the same store takes:
    its environment and a config file."""

    server: ServerProcess
    environ: dict[str, str]
    config: Path


@contextlib.contextmanager
def served_store(tmp_path: Path, grace: float) -> Iterator[ServedStore]:
    """A started registry on ``tmp_path / "data"``, stopped on exit."""
    server = filesystem_registry(
        tmp_path,
        REGISTRY_STORAGE_DELETE_ENABLED="true",
        REGISTRY_STORAGE_GC_GRACEPERIOD=f"{grace}s",
    )
    environ = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
        "REGISTRY_STORAGE_GC_GRACEPERIOD": f"{grace}s",
        "REGISTRY_LOG_LEVEL": "error",
    }
    config = tmp_path / "gc.yml"
    config.write_text("version: 0.1\n")
    server.start()
    try:
        yield ServedStore(server, environ, config)
    finally:
        server.stop()


@dataclass
class Collected:
    deleted: int = 0  # what the collections reported deleted, summed


@contextlib.asynccontextmanager
async def collecting(collect: Callable[[], Awaitable[int]]) -> AsyncIterator[Collected]:
    """Run ``collect`` (one collection: how much it deleted) again and again while the
    block runs; the run under way when it ends is finished, never cancelled."""
    collected = Collected()
    stop = asyncio.Event()

    async def repeatedly() -> None:
        while not stop.is_set():
            collected.deleted += await collect()

    collector = asyncio.create_task(repeatedly())
    try:
        yield collected
    finally:
        stop.set()
        await collector
