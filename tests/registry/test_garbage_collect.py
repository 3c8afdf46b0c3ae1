"""``registry garbage-collect`` against the reference registry's, on copies of one store.

A store is built through portside's API with every case collection must get right
(re-tagged images, a deleted manifest, an index with untagged children, a blob no
manifest names, layers shared across repositories, a signature on an image). It is
copied twice; Debian's ``docker-registry garbage-collect`` (2.8.2) collects one copy,
portside's the other, with and without ``--delete-untagged``. Both must delete the same
blobs and manifests, and each registry must then serve every remaining tag of the store
the *other* collected, every blob verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.registry.conftest import RegistryClient
from tests.registry.helpers import Blob, assert_2xx, push_blob, put_manifest, send
from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from tests.support.portside_servers import FILESYSTEM_CONFIG, REPOSITORY_ROOT, server_env
from tests.support.tools import free_port, require_tool


def blob(label: str) -> Blob:
    return Blob(hashlib.sha256(label.encode()).digest() * 64 + label.encode())


def manifest(config: Blob, layers: list[Blob], subject: bytes | None = None) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": len(config.data)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": b.digest, "size": len(b.data)} for b in layers
        ],
    }
    if subject is not None:
        document["subject"] = {
            "mediaType": OCI_MANIFEST,
            "digest": Blob(subject).digest,
            "size": len(subject),
        }
    return json.dumps(document).encode()


async def push_image(
    client: RegistryClient,
    name: str,
    reference: str | None,
    config: Blob,
    layers: list[Blob],
    subject: bytes | None = None,
) -> bytes:
    for item in (config, *layers):
        assert_2xx(await push_blob(client, name, item))
    body = manifest(config, layers, subject)
    assert_2xx(await put_manifest(client, name, reference or Blob(body).digest, body))
    return body


@dataclass
class Store:
    """What was pushed, by what a correct collection must do with it."""

    always_kept: set[str]  # blobs any collection keeps
    kept_unless_untagged_deleted: set[str]  # blobs only an untagged manifest references
    always_deleted: set[str]
    signature: set[str]  # an untagged referrer of a tagged image: manifest and config
    children: set[str]  # the configs and layers of an index's untagged children
    child_manifests: set[str]  # and those children


async def build_store(client: RegistryClient) -> Store:
    shared, l1, l2, l3, l4, l5, l6, l7, orphan = (blob(f"layer-{i}") for i in range(9))
    c1, c2, c3, c4, c6, c7, c8, csig = (blob(f"config-{i}") for i in range(8))
    # a/app: v1 is re-pushed, so the first v1 image becomes untagged (but stays in v1's
    # history); v2 stays; "tmp" is pushed and its manifest deleted.
    old_v1 = await push_image(client, "a/app", "v1", c1, [l1, l2, shared])
    v2 = await push_image(client, "a/app", "v2", c2, [l3, shared])
    v1 = await push_image(client, "a/app", "v1", c3, [l4, shared])
    tmp = await push_image(client, "a/app", "tmp", c4, [l5])
    assert_2xx(await send(client, "DELETE", f"/v2/a/app/manifests/{Blob(tmp).digest}"))
    # b/multi: an index tagged "multi" whose two children were pushed by digest.
    child1 = await push_image(client, "b/multi", None, c6, [l6])
    child2 = await push_image(client, "b/multi", None, c7, [l7])
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": Blob(m).digest, "size": len(m)}
                for m in (child1, child2)
            ],
        }
    ).encode()
    assert_2xx(await put_manifest(client, "b/multi", "multi", index, OCI_INDEX))
    # c/orphan: a blob pushed for a manifest that never came.
    assert_2xx(await push_blob(client, "c/orphan", orphan))
    # d/shared: shares l1 with the untagged image of a/app, tagged.
    d_latest = await push_image(client, "d/shared", "latest", c8, [l1, shared])
    # a/app: an untagged signature on v2 (a referrer: it lives while its subject does).
    signature = await push_image(client, "a/app", None, csig, [], subject=v2)
    index_digest = Blob(index).digest

    def digests(*items: Blob | bytes) -> set[str]:
        return {i.digest if isinstance(i, Blob) else Blob(i).digest for i in items}

    return Store(
        always_kept=digests(shared, l1, l3, l4, l6, l7, c2, c3, c6, c7, c8, v1, v2)
        | digests(child1, child2, d_latest)
        | {index_digest},
        kept_unless_untagged_deleted=digests(l2, c1, old_v1),
        always_deleted=digests(l5, c4, tmp, orphan),
        signature=digests(csig, signature),
        children=digests(c6, l6, c7, l7),
        child_manifests=digests(child1, child2),
    )


def blobs_in(root: Path) -> set[str]:
    found = set()
    for data in (root / "docker/registry/v2/blobs").glob("*/*/*/data"):
        found.add(f"{data.parent.parent.parent.name}:{data.parent.name}")
    return found


def revisions_in(root: Path) -> set[str]:
    base = root / "docker/registry/v2/repositories"
    return {
        f"{link.relative_to(base).parts[0]}/{link.relative_to(base).parts[1]}@"
        f"{link.parent.parent.name}:{link.parent.name}"
        for link in base.glob("*/*/_manifests/revisions/*/*/link")
    }


def layer_links_in(root: Path) -> set[str]:
    base = root / "docker/registry/v2/repositories"
    return {
        f"{'/'.join(link.relative_to(base).parts[:2])}@{link.parent.parent.name}:{link.parent.name}"
        for link in base.glob("*/*/_layers/*/*/link")
    }


# The stores here are freshly written: portside collects them with no grace period, as
# Distribution does (the reference would read this variable as a storage driver).
OFFLINE = {"REGISTRY_STORAGE_GC_GRACEPERIOD": "0s"}


def collect(command: list[str], config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*command, "garbage-collect", *flags, str(config)],
        cwd=REPOSITORY_ROOT,
        env=server_env(OFFLINE if command == PORTSIDE else None),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
async def collected_store(registry: RegistryClient, tmp_path: Path) -> tuple[Store, Path]:
    store = await build_store(registry)
    return store, tmp_path / "registry-data"


def configured_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target / "root")
    config = target / "config.yml"
    config.write_text(FILESYSTEM_CONFIG.format(root=target / "root", port=free_port()))
    return config


PORTSIDE = [sys.executable, "-m", "registry"]


@pytest.mark.parametrize("flags", [(), ("--delete-untagged",)], ids=["all", "untagged"])
async def test_collection_matches_the_reference(
    collected_store: tuple[Store, Path], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    store, source = collected_store
    reference = require_tool("docker-registry")
    ours = configured_copy(source, tmp_path / "ours")
    theirs = configured_copy(source, tmp_path / "theirs")
    before = blobs_in(source)
    untagged = bool(flags)

    dry = collect(PORTSIDE, ours, "--dry-run", *flags)
    assert blobs_in(ours.parent / "root") == before, "a dry run deleted something"
    collect(PORTSIDE, ours, *flags)
    collect([reference], theirs, *(["-m"] if untagged else []))

    kept = blobs_in(ours.parent / "root")
    expected = store.always_kept | store.signature
    if not untagged:
        expected |= store.kept_unless_untagged_deleted
    assert kept == expected
    assert before - kept == store.always_deleted | (
        store.kept_unless_untagged_deleted if untagged else set()
    )
    for digest in before - kept:
        assert f"blob eligible for deletion: {digest}" in dry.stdout
    # The reference deletes the same, except where 2.8.2 is known to be wrong with -m:
    # it knows no referrers, so it deletes the untagged signature of a kept image, which
    # portside keeps with its subject; and it deletes the layers and configs of an index's
    # untagged children, breaking the multi-platform image (distribution/distribution#3178,
    # fixed in Distribution 3), which portside keeps.
    differences = store.signature | store.children if untagged else set()
    assert blobs_in(theirs.parent / "root") | differences == kept
    ours_revisions = revisions_in(ours.parent / "root")
    missing = store.signature | store.child_manifests if untagged else set()
    assert {r for r in ours_revisions if r.split("@")[1] not in missing} == revisions_in(
        theirs.parent / "root"
    )
    # Layer links to deleted blobs go too (Distribution 3 does this; 2.8.2 leaves them).
    for link in layer_links_in(ours.parent / "root"):
        assert link.split("@")[1] in kept, link

    await assert_every_tag_pulls(ours, "reference", ["a/app", "b/multi", "d/shared"])
    # After the reference's -m, b/multi cannot be pulled from any registry (#3178).
    readable = ["a/app", "d/shared"] if untagged else ["a/app", "b/multi", "d/shared"]
    await assert_every_tag_pulls(theirs, "portside", readable)


async def assert_every_tag_pulls(config: Path, server: str, names: list[str]) -> None:
    """Serve the collected root with ``server`` and pull every tag, every blob verified."""
    port = int(config.read_text().split("127.0.0.1:")[1].split()[0])
    if server == "reference":
        command = [require_tool("docker-registry"), "serve", str(config)]
    else:
        command = [*PORTSIDE, "serve", str(config)]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=REPOSITORY_ROOT, env=server_env(), stdout=subprocess.DEVNULL
    )
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            await wait_ready(session)
            pulled = 0
            for name in names:
                async with session.get(f"/v2/{name}/tags/list") as response:
                    tags = (await response.json())["tags"] or []
                for tag in tags:
                    pulled += await pull(session, name, tag)
            assert pulled > 0
    finally:
        process.terminate()
        await process.wait()


async def wait_ready(session: aiohttp.ClientSession) -> None:
    for _ in range(200):
        try:
            async with session.get("/v2/") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the registry did not start")


async def pull(session: aiohttp.ClientSession, name: str, reference: str) -> int:
    """Fetch a manifest and, recursively, everything it names; each digest verified."""
    accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    async with session.get(f"/v2/{name}/manifests/{reference}", headers=accept) as response:
        assert response.status == 200, (name, reference, response.status)
        body = await response.read()
    if reference.startswith("sha256:"):
        assert Blob(body).digest == reference
    document = json.loads(body)
    count = 1
    for child in document.get("manifests", []):
        count += await pull(session, name, child["digest"])
    for item in [document.get("config"), *document.get("layers", [])]:
        if item is None:
            continue
        async with session.get(f"/v2/{name}/blobs/{item['digest']}") as response:
            assert response.status == 200, (name, item["digest"], response.status)
            assert Blob(await response.read()).digest == item["digest"]
        count += 1
    return count


async def test_collection_removes_what_failed_work_left(
    registry: RegistryClient, tmp_path: Path
) -> None:
    root = tmp_path / "registry-data"
    repositories = root / "docker/registry/v2/repositories"
    # e/gone holds only an untagged image (deleted with -m), but e/gone/sub lives on.
    await push_image(registry, "e/gone", None, blob("config-gone"), [blob("layer-gone")])
    await push_image(registry, "e/gone/sub", "v1", blob("config-sub"), [blob("layer-sub")])
    # An upload abandoned long ago in a repository that never got a blob, and a fresh one.
    abandoned = await send(registry, "POST", "/v2/f/abandoned/blobs/uploads/")
    fresh = await send(registry, "POST", "/v2/e/gone/sub/blobs/uploads/")
    abandoned_id = abandoned.headers["Docker-Upload-UUID"]
    fresh_id = fresh.headers["Docker-Upload-UUID"]
    (repositories / "f/abandoned/_uploads" / abandoned_id / "startedat").write_text("0.0")
    # A killed writer's temporary beside a link.
    leftover = (
        repositories
        / "e/gone/sub/_manifests/tags/v1/current/.link.0123456789abcdef0123456789abcdef.tmp"
    )
    leftover.write_text("half")
    config = tmp_path / "gc.yml"
    config.write_text(FILESYSTEM_CONFIG.format(root=root, port=free_port()))

    before = sorted(p for p in root.rglob("*"))
    dry = collect(PORTSIDE, config, "--dry-run", "--delete-untagged")
    assert sorted(p for p in root.rglob("*")) == before, "a dry run removed something"
    assert "e/gone: empty repository eligible for deletion" in dry.stdout
    assert "would delete 1 abandoned uploads" in dry.stdout

    done = collect(PORTSIDE, config, "--delete-untagged")
    # Two empty repositories: e/gone, and f/abandoned once its upload is purged.
    assert "deleted 1 abandoned uploads, 1 temporary files of killed writers and 2 empty" in (
        done.stdout
    )
    assert not (repositories / "e/gone/_manifests").exists()
    assert not (repositories / "e/gone/_layers").exists()
    assert (repositories / "e/gone/sub/_manifests/tags/v1/current/link").exists()
    assert not (repositories / "f").exists()  # the repository and its empty prefix
    assert (repositories / "e/gone/sub/_uploads" / fresh_id / "data").exists()
    assert not leftover.exists()
    await assert_every_tag_pulls(config, "portside", ["e/gone/sub"])


def store_manifest_by_hand(root: Path, name: str, tag: str, body: bytes) -> None:
    """A manifest as Distribution may have stored it (it accepts what Python's decoder
    refuses), written straight into the layout: content, revision link, tag links."""
    v2 = root / "docker/registry/v2"
    digest = Blob(body).digest
    hex_digest = digest.split(":", 1)[1]
    data = v2 / "blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(body)
    repository = v2 / "repositories" / name / "_manifests"
    for link in (
        repository / "revisions/sha256" / hex_digest / "link",
        repository / "tags" / tag / "current/link",
        repository / "tags" / tag / "index/sha256" / hex_digest / "link",
    ):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)


async def test_manifests_python_cannot_parse_keep_what_they_name(
    registry: RegistryClient, tmp_path: Path
) -> None:
    """Go's decoder reads invalid UTF-8 in strings and nesting far past Python's limit;
    a store Distribution wrote may hold such manifests, and collection must keep their
    blobs, not take them for unreferenced."""
    root = tmp_path / "registry-data"
    kept: list[Blob] = []
    for name, extra in (
        ("odd/latin1", b',"annotations":{"authors":"Jos\xe9"}'),
        ("odd/nested", b',"x":' + b"[" * 2000 + b"]" * 2000),
    ):
        config, layer = blob(f"{name}-config"), blob(f"{name}-layer")
        for item in (config, layer):
            assert_2xx(await push_blob(registry, name, item))
        kept += [config, layer]
        store_manifest_by_hand(root, name, "latest", manifest(config, [layer])[:-1] + extra + b"}")
    settings = tmp_path / "gc.yml"
    settings.write_text(FILESYSTEM_CONFIG.format(root=root, port=free_port()))
    done = collect(PORTSIDE, settings)
    assert "deleted 0 blobs" in done.stdout, done.stdout
    remaining = blobs_in(root)
    assert {b.digest for b in kept} <= remaining
