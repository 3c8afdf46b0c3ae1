"""``registry garbage-collect --delete-untagged`` run again and again against a store a
registry serves while clients push (docs/online-gc.md, "Untagged manifests").

Each client pushes images by digest (untagged, as a multi-platform push does before its
index), then, a random while later, points a tag at one of them, or pushes an index by
tag naming some of them, sometimes after a HEAD of each; tags are reused, so older
manifests become untagged and collectable. A push refused (400 MANIFEST_BLOB_UNKNOWN:
collected meanwhile; 503: a collector busy with it) is counted, never retried. Then no
tag and no index may resolve to a deleted manifest, every manifest must pull fully, and
once the grace period is over one more collection leaves only tagged manifests and the
children of tagged indexes. (On S3 the same storm needs a grace period of 10 s on moto
under load, half of it being a PUT's bound, which makes it minutes long: the protocol
does not depend on the backend beyond ``lastref``, which the S3 storms of
tests/registry/scaleout/test_online_gc_cluster.py exercise.)
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from registry.config import load_config
from registry.keys import STORAGE
from registry.oci.digest import Digest, parse_digest
from registry.storage.errors import NameUnknown
from registry.storage.gc import GarbageCollector
from registry.storage.references import references_of
from registry.wiring import create_storage
from tests.registry import gc_stress
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob, assert_2xx, push_blob, put_manifest, send
from tests.registry.test_online_gc_ordering import NAME, backdate, manifest, pause_after
from tests.support.oci import OCI_INDEX, OCI_MANIFEST
from tests.support.portside_servers import REPOSITORY_ROOT, server_env

GRACE = 1.0
PAUSED_GRACE = 30.0  # the single-step tests: nothing in them is that old by accident
REPOSITORIES = gc_stress.REPOSITORIES


@dataclass
class Counts:
    acknowledged: Counter[str] = field(default_factory=Counter)  # by kind of push
    refused: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


async def _put(
    session: aiohttp.ClientSession,
    name: str,
    reference: str,
    body: bytes,
    media_type: str,
    kind: str,
    counts: Counts,
) -> bool:
    async with session.put(
        f"/v2/{name}/manifests/{reference}", data=body, headers={"Content-Type": media_type}
    ) as response:
        text = await response.read()
    if response.status == 201:
        counts.acknowledged[kind] += 1
        return True
    if response.status in (400, 503) and (
        b"MANIFEST_BLOB_UNKNOWN" in text or b"UNAVAILABLE" in text
    ):
        counts.refused[f"{kind} {response.status}"] += 1
        return False
    counts.errors.append(f"PUT {kind}: {response.status} {text[:300]!r}")
    return False


async def _head_all(session: aiohttp.ClientSession, name: str, digests: list[str]) -> None:
    for digest in digests:
        await gc_stress._status(session, "HEAD", f"/v2/{name}/manifests/{digest}")


def _index(children: list[bytes]) -> bytes:
    manifests = [
        {"mediaType": OCI_MANIFEST, "digest": gc_stress._digest(c), "size": len(c)}
        for c in children
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


async def _client(
    session: aiohttp.ClientSession, client: int, until: float, pause: float, counts: Counts
) -> None:
    storm = gc_stress.Storm()  # gc_stress's blob pushes count into it
    pushed: dict[str, list[bytes]] = {name: [] for name in REPOSITORIES}
    serial = 0
    while time.monotonic() < until and not counts.errors:
        serial += 1
        name = random.choice(REPOSITORIES)
        config, layers, manifest = gc_stress._image(client, serial)
        for blob in (config, *layers):
            await gc_stress._push_blob(session, name, blob, storm)
        digest = gc_stress._digest(manifest)
        if await _put(session, name, digest, manifest, OCI_MANIFEST, "by digest", counts):
            pushed[name] = [*pushed[name][-5:], manifest]
        await asyncio.sleep(random.uniform(0, pause))
        if not pushed[name]:
            continue
        tag = f"c{client}-{random.randrange(3)}"  # reused: what it named becomes untagged
        if random.random() < 0.5:
            chosen = [random.choice(pushed[name])]
            kind, body, media_type = "tag", chosen[0], OCI_MANIFEST
        else:
            chosen = random.sample(pushed[name], min(2, len(pushed[name])))
            kind, body, media_type = "index", _index(chosen), OCI_INDEX
        if random.random() < 0.5:  # told they exist, the client takes its time
            await _head_all(session, name, [gc_stress._digest(c) for c in chosen])
            await asyncio.sleep(random.uniform(0, pause))
        await _put(session, name, tag, body, media_type, kind, counts)


async def _storm(base_url: str, *, clients: int, seconds: float, pause: float) -> Counts:
    counts = Counts()
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(session, i, until, pause, counts) for i in range(clients)))
    return counts


async def _collect(config: Path, environ: Mapping[str, str]) -> int:
    """One ``garbage-collect -m`` run: how many manifests it deleted."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "registry", "garbage-collect", "-m", "-q", str(config)),
        cwd=REPOSITORY_ROOT,
        env=server_env(environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, err.decode()[-3000:]
    return int(out.decode().split(" blobs, ", 1)[1].split()[0])


async def assert_tags_and_indexes_resolve(
    base_url: str, environ: Mapping[str, str]
) -> dict[str, set[Digest]]:
    """Every tag and every child of every index resolves to a manifest revision of its
    repository, and every manifest pulls fully (each blob's digest verified). The
    revisions a tag keeps (tagged, or the child of a tagged index), by repository."""
    registry = create_storage(load_config(None, environ))
    kept: dict[str, set[Digest]] = {}
    try:
        async with aiohttp.ClientSession(base_url) as session:
            for name in REPOSITORIES:
                view = registry.repository(name)
                revisions = {d async for d in view.blobs.revisions.all()}
                bodies = {}
                for digest in revisions:
                    body = await gc_stress._pull(session, f"/v2/{name}/manifests/{digest}")
                    assert gc_stress._digest(body) == str(digest)
                    bodies[digest] = body
                    for blob in references_of(body).blobs:
                        data = await gc_stress._pull(session, f"/v2/{name}/blobs/{blob}")
                        assert gc_stress._digest(data) == str(blob), f"{name}@{digest}: {blob}"
                    for child in references_of(body).manifests:
                        assert child in revisions, f"{name}@{digest} names deleted {child}"
                kept[name] = set()
                try:
                    tags = list(await view.tags.all())
                except NameUnknown:  # a repository without tags (its tags path absent)
                    tags = []
                for tag in tags:
                    body = await gc_stress._pull(session, f"/v2/{name}/manifests/{tag}")
                    digest = parse_digest(gc_stress._digest(body))
                    assert digest in revisions, f"{name}:{tag} resolves to deleted {digest}"
                    kept[name] |= {digest, *references_of(body).manifests}
    finally:
        await registry.close()
    return kept


async def test_delete_untagged_never_deletes_what_a_concurrent_push_tags_or_indexes(
    tmp_path: Path,
) -> None:
    with gc_stress.served_store(tmp_path, GRACE) as store:
        environ = store.environ
        async with gc_stress.collecting(lambda: _collect(store.config, environ)) as collected:
            counts = await _storm(store.server.url, clients=8, seconds=12, pause=2 * GRACE)
        assert not counts.errors, counts.errors[:5]
        await assert_tags_and_indexes_resolve(store.server.url, environ)
        # Once the grace period is over, only what tags keep survives a collection.
        await asyncio.sleep(GRACE + 1.5)
        await _collect(store.config, environ)
        kept = await assert_tags_and_indexes_resolve(store.server.url, environ)
        registry = create_storage(load_config(None, environ))
        try:
            for name in REPOSITORIES:
                left = {d async for d in registry.repository(name).blobs.revisions.all()}
                assert left == kept[name], (name, left - kept[name])
        finally:
            await registry.close()
    assert counts.acknowledged["tag"] > 5 and counts.acknowledged["index"] > 5, counts
    # Collection deleted untagged manifests under the storm.
    assert collected.deleted > 5, (collected.deleted, counts)


async def _old_untagged(client: RegistryClient, root: Path, label: str) -> bytes:
    """An image pushed by digest (untagged) long ago: its manifest and blobs look old."""
    config, layer = Blob(f'{{"{label}": 1}}'.encode()), Blob(f"layer {label}".encode())
    for blob in (config, layer):
        assert_2xx(await push_blob(client, NAME, blob))
    body = manifest(config, layer)
    assert_2xx(await put_manifest(client, NAME, Blob(body).digest, body))
    for blob in (config, layer, Blob(body)):
        backdate(root, blob, 10 * PAUSED_GRACE)
    return body


@pytest.mark.parametrize("head", [True, False])
async def test_a_head_of_an_untagged_manifest_spares_it(
    make_registry: ClientFactory, registry_environ: dict[str, str], head: bool
) -> None:
    client = await make_registry({"REGISTRY_STORAGE_GC_GRACEPERIOD": f"{PAUSED_GRACE:.0f}s"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    body = await _old_untagged(client, root, "head")
    if head:  # a client is told it exists: it may push an index naming it next
        reply = await send(client, "HEAD", f"/v2/{NAME}/manifests/{Blob(body).digest}")
        assert reply.status == 200, reply
    collector = GarbageCollector(client.app[STORAGE], grace=PAUSED_GRACE, delete_untagged=True)
    report = await collector.run()
    deleted = {str(d.digest) for d in report.manifests}
    assert (Blob(body).digest in deleted) is not head, report.manifests


@pytest.mark.parametrize("pause", ["before re-read", "before delete"])
async def test_a_tag_push_racing_a_paused_untagged_collection(
    make_registry: ClientFactory, registry_environ: dict[str, str], pause: str
) -> None:
    """A tag pushed for an old untagged manifest while a collector condemned it: before
    the re-read, the run spares the manifest; after it, the PUT waits for the run, then
    writes the revision again. Either way the tag resolves and the image pulls."""
    client = await make_registry({"REGISTRY_STORAGE_GC_GRACEPERIOD": f"{PAUSED_GRACE:.0f}s"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    body = await _old_untagged(client, root, pause)
    # Its blobs are named by a tagged image too: only the manifest is at stake here.
    config, layer = (Blob(f'{{"{pause}": 1}}'.encode()), Blob(f"layer {pause}".encode()))
    other = json.loads(manifest(config, layer))
    other["annotations"] = {"another": "image"}
    assert_2xx(await put_manifest(client, NAME, "other", json.dumps(other).encode()))
    collector = GarbageCollector(client.app[STORAGE], grace=PAUSED_GRACE, delete_untagged=True)
    reached, release = asyncio.Event(), asyncio.Event()
    if pause == "before re-read":
        pause_after(collector.safety.condemned, "write", reached, release)
    else:
        pause_after(collector.safety, "condemn", reached, release)
    collection = asyncio.create_task(collector.run())
    await asyncio.wait_for(reached.wait(), timeout=30)
    put = asyncio.create_task(put_manifest(client, NAME, "tagged", body))
    await asyncio.sleep(0.5)
    assert not put.done(), "the PUT must wait while a collector holds the manifest"
    release.set()
    report = await asyncio.wait_for(collection, timeout=30)
    assert_2xx(await asyncio.wait_for(put, timeout=30))
    deleted = {str(d.digest) for d in report.manifests}
    assert (Blob(body).digest in deleted) is (pause == "before delete"), report.manifests
    pulled = await send(client, "GET", f"/v2/{NAME}/manifests/tagged")
    assert pulled.status == 200 and pulled.body == body
    for blob in (config, layer):
        assert (await send(client, "GET", f"/v2/{NAME}/blobs/{blob.digest}")).status == 200
