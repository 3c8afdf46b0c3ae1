"""Acknowledged means durable: before a 201, the registry process has flushed the blob's
data, the link files and the directory entries that name them (strace on the real
server); with ``storage.filesystem.fsync: false`` it flushes nothing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from registry.storage.uploads import STATELESS_SIZE
from tests.support.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256_digest
from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.syscalls import Call, SyscallTrace

REPO = "durable/app"
BLOB_SIZE = 20 * 1024 * 1024  # more than the write-back step (8 MiB), so write-back starts


class Traced:
    def __init__(self, registry: ServerProcess, trace: SyscallTrace, root: Path) -> None:
        self.registry, self.trace, self.root = registry, trace, root

    def stop(self) -> list[Call]:
        """Stop the registry (strace exits with it) and return what it called."""
        self.registry.stop()
        self.trace.close()
        return self.trace.calls()


def _start(tmp_path: Path, fsync: str) -> Iterator[Traced]:
    with traced_registry(tmp_path, REGISTRY_STORAGE_FILESYSTEM_FSYNC=fsync) as traced:
        yield traced


@contextlib.contextmanager
def traced_registry(directory: Path, **settings: str) -> Iterator[Traced]:
    """A registry storing in ``directory/data``, its file syscalls traced from its
    start; stopped (and the trace closed) at the end."""
    registry = filesystem_registry(
        directory, REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED="false", **settings
    )
    registry.start()
    assert registry.process is not None
    try:
        trace = SyscallTrace(registry.process.pid, directory / "strace.log")
    except BaseException:
        registry.stop()
        raise
    try:
        yield Traced(registry, trace, (directory / "data").resolve())
    finally:
        registry.stop()
        trace.close()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Traced]:
    yield from _start(tmp_path, "true")


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Traced]:
    yield from _start(tmp_path, "false")


async def _push(url: str) -> tuple[str, str]:
    """Push a 20 MiB layer, a config and a manifest tagged ``latest``; their digests."""
    layer = os.urandom(BLOB_SIZE)
    config = b"{}"
    async with aiohttp.ClientSession() as session:
        for data in (layer, config):
            async with session.post(f"{url}/v2/{REPO}/blobs/uploads/") as response:
                assert response.status == 202, await response.text()
                location = response.headers["Location"]
            async with session.put(
                url + location if location.startswith("/") else location,
                params={"digest": sha256_digest(data)},
                data=io.BytesIO(data),
                headers={"Content-Type": "application/octet-stream"},
            ) as response:
                assert response.status == 201, await response.text()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": 2},
                "layers": [
                    {"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(layer), "size": BLOB_SIZE}
                ],
            }
        ).encode()
        async with session.put(
            f"{url}/v2/{REPO}/manifests/latest",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        ) as response:
            assert response.status == 201, await response.text()
    return sha256_digest(layer), hashlib.sha256(manifest).hexdigest()


def _created_responses(calls: Sequence[Call]) -> list[int]:
    """Where each ``201 Created`` was sent, in order."""
    return [
        index
        for index, call in enumerate(calls)
        if call.name in ("sendto", "sendmsg", "write", "writev")
        and any(s.startswith("HTTP/1.1 201") for s in call.strings)
    ]


def assert_durable_rename(calls: Sequence[Call], destination: Path, acknowledged: int) -> None:
    """The file renamed to ``destination`` had its data flushed before the rename, and
    the destination directory was flushed after it, all before the ``acknowledged`` send."""
    renames = [
        i
        for i, c in enumerate(calls)
        if c.name.startswith("rename") and c.strings[-1:] == (str(destination),)
    ]
    assert renames, f"nothing was renamed to {destination}"
    rename = renames[0]
    source = Path(calls[rename].strings[0])
    data = [
        i
        for i, c in enumerate(calls[:rename])
        if c.name in ("fsync", "fdatasync") and c.fd_path == str(source) and c.result == 0
    ]
    assert data, f"{source} was renamed to {destination} without flushing its data"
    directory = [
        i
        for i, c in enumerate(calls)
        if i > rename and c.name == "fsync" and c.fd_path == str(destination.parent)
    ]
    assert directory and directory[0] < acknowledged, f"{destination.parent} not flushed in time"


def assert_flushed_before(calls: Sequence[Call], directory: Path, acknowledged: int) -> None:
    flushes = [i for i, c in enumerate(calls) if c.name == "fsync" and c.fd_path == str(directory)]
    assert flushes and flushes[0] < acknowledged, f"{directory} was not flushed before the 201"


async def test_push_is_flushed_before_each_201(durable: Traced) -> None:
    layer, manifest_hex = await _push(durable.registry.url)
    calls = durable.stop()
    created = _created_responses(calls)
    assert len(created) == 3, "three 201s: the layer, the config, the manifest"
    layer_ack, _config_ack, manifest_ack = created

    v2 = durable.root / "docker/registry/v2"
    layer_hex = layer.split(":", 1)[1]
    blob_dir = v2 / "blobs/sha256" / layer_hex[:2] / layer_hex
    repo = v2 / "repositories" / REPO
    # The layer: write-back started while it arrived, then data, rename, directories.
    assert any(c.name == "sync_file_range" and "_uploads" in (c.fd_path or "") for c in calls)
    assert_durable_rename(calls, blob_dir / "data", layer_ack)
    assert_durable_rename(calls, repo / "_layers/sha256" / layer_hex / "link", layer_ack)
    for created_dir in (blob_dir, repo / "_layers/sha256" / layer_hex):
        assert_flushed_before(calls, created_dir.parent, layer_ack)
    # The manifest: its blob, its revision link, the tag's index and current links.
    manifest_dir = v2 / "blobs/sha256" / manifest_hex[:2] / manifest_hex
    revision = repo / "_manifests/revisions/sha256" / manifest_hex / "link"
    tag = repo / "_manifests/tags/latest"
    for destination in (
        manifest_dir / "data",
        revision,
        tag / "index/sha256" / manifest_hex / "link",
        tag / "current/link",
    ):
        assert_durable_rename(calls, destination, manifest_ack)
        assert_flushed_before(calls, destination.parent.parent, manifest_ack)


async def test_fsync_false_flushes_nothing(throwaway: Traced) -> None:
    await _push(throwaway.registry.url)
    calls = throwaway.stop()
    assert len(_created_responses(calls)) == 3
    root = str(throwaway.root)
    flushes = [
        c
        for c in calls
        if c.name in ("fsync", "fdatasync", "sync_file_range")
        and (c.fd_path or "").startswith(root)
    ]
    assert flushes == []


def _flushes(calls: Sequence[Call]) -> list[tuple[int, Call]]:
    return [(i, c) for i, c in enumerate(calls) if c.name in ("fsync", "fdatasync")]


async def test_an_upload_start_is_not_flushed(durable: Traced) -> None:
    """A POST's 202 acknowledges nothing stored (a PATCH's data is not flushed either):
    its ``startedat`` and the upload's directories cost no flush; the only flush in the
    upload area is of the data the final PUT commits."""
    await _push(durable.registry.url)
    calls = durable.stop()
    in_uploads = [c for _, c in _flushes(calls) if "/_uploads" in (c.fd_path or "")]
    assert in_uploads, "the committed data is flushed from the upload area"
    assert [c for c in in_uploads if not (c.fd_path or "").endswith("/data")] == []


async def test_new_directories_are_flushed_after_the_file_they_hold(durable: Traced) -> None:
    """The parent of a directory made for a new file is flushed after that file is
    renamed into place, not before its data: on journalling file systems the data's
    flush then commits the ``mkdir`` too, and the parent's flush waits for no commit of
    its own (one journal commit fewer per new directory)."""
    layer, _ = await _push(durable.registry.url)
    calls = durable.stop()
    layer_ack = _created_responses(calls)[0]
    v2 = durable.root / "docker/registry/v2"
    layer_hex = layer.split(":", 1)[1]
    for new_file in (
        v2 / "blobs/sha256" / layer_hex[:2] / layer_hex / "data",
        v2 / "repositories" / REPO / "_layers/sha256" / layer_hex / "link",
    ):
        rename = next(
            i
            for i, c in enumerate(calls)
            if c.name.startswith("rename") and c.strings[-1:] == (str(new_file),)
        )
        parent = str(new_file.parent.parent)
        flushed = [i for i, c in _flushes(calls) if c.fd_path == parent and i < layer_ack]
        assert flushed, f"{parent} was not flushed before the 201"
        assert min(flushed) > rename, f"{parent} was flushed before {new_file} was in place"


async def test_hash_states_are_written_but_not_flushed(durable: Traced) -> None:
    """A chunked upload stores its running hash state after each PATCH (so another
    instance can finish it), but a 202 acknowledges nothing and the PATCH's data is not
    flushed either: flushing the states cost a data flush and 2-3 directory flushes per
    chunk (issue 17). Only the committed data is flushed in the upload area, and the
    states and the start time, needing no flush, are written inline. (Chunks of more
    than STATELESS_SIZE: an upload no larger stores no state at all.)"""
    data = os.urandom(3 * STATELESS_SIZE)
    url = durable.registry.url
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v2/{REPO}/blobs/uploads/") as response:
            assert response.status == 202, await response.text()
            location = response.headers["Location"]
        half = len(data) // 2
        for start, chunk in ((0, data[:half]), (half, data[half:])):
            async with session.patch(
                url + location if location.startswith("/") else location,
                data=io.BytesIO(chunk),  # aiohttp refuses raw bytes over 1 MiB
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + len(chunk) - 1}",
                },
            ) as response:
                assert response.status == 202, await response.text()
                location = response.headers["Location"]
        async with session.put(
            url + location if location.startswith("/") else location,
            params={"digest": sha256_digest(data)},
        ) as response:
            assert response.status == 201, await response.text()
    assert durable.registry.process is not None
    main_thread = durable.registry.process.pid
    calls = durable.stop()
    states = [c for c in calls if c.name.startswith("rename") and "/hashstates/" in c.strings[-1]]
    assert len(states) == 2, "one hash state stored per PATCH"
    # Nothing to wait for, so no hop to a thread: written on the event loop's thread,
    # as is the upload's start time (issue 17: each hop cost ~70 futex calls under load),
    # the latter in place: no one can read it before the upload's id is answered.
    started = [c for c in calls if c.name == "write" and (c.fd_path or "").endswith("/startedat")]
    assert len(started) == 1
    assert [c for c in calls if c.name.startswith("rename") and "startedat" in c.strings[-1]] == []
    assert {c.thread for c in [*states, *started]} == {main_thread}
    in_uploads = [c for _, c in _flushes(calls) if "/_uploads" in (c.fd_path or "")]
    assert [c.fd_path for c in in_uploads if not (c.fd_path or "").endswith("/data")] == []
