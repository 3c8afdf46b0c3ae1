"""Durable pushes on a journalled filesystem, as production volumes are (a real ext4 in a
loop-mounted file): every file of a commit has its data flushed before the first name is
made, the names follow in order (a link's directory only once its blob is in place), and
since ext4's journal commits directory changes in order, one directory is flushed, the
last name's, before the 201; a blob's commit then waits for two journal commits instead
of four. The same store without a journal is not taken for ordered."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from registry.storage.driver.metadata_order import device_in_order
from tests.registry.test_durability import (
    REPO,
    Traced,
    _created_responses,
    _push,
    traced_registry,
)
from tests.support.ext4 import journal_commits, mounted_ext4, mounted_xfs
from tests.support.oci import sha256_digest
from tests.support.portside_servers import filesystem_registry, registry_process
from tests.support.syscalls import Call, SyscallTrace
from tests.support.tmpfs import mounted_tmpfs

# Requests alone, each after the journal's own work has settled.
SETTLE = 0.3
BLOBS = 3


@pytest.fixture
def journaled(tmp_path: Path) -> Iterator[Path]:
    with mounted_ext4(tmp_path) as mount_point:
        yield mount_point


def test_which_filesystems_keep_metadata_in_order(tmp_path: Path) -> None:
    (tmp_path / "with").mkdir()
    with mounted_ext4(tmp_path / "with") as journaled:
        assert device_in_order(journaled) == os.stat(journaled).st_dev
    (tmp_path / "without").mkdir()
    with mounted_ext4(tmp_path / "without", journal=False) as unjournaled:
        assert device_in_order(unjournaled) is None
    with mounted_tmpfs(tmp_path / "tmpfs", "size=1m") as tmpfs:
        assert device_in_order(tmpfs) is None
    (tmp_path / "xfs").mkdir()
    with mounted_xfs(tmp_path / "xfs") as xfs:
        assert device_in_order(xfs) == os.stat(xfs).st_dev
    # A journalled store with another filesystem mounted inside it: not all in order.
    (tmp_path / "mixed").mkdir()
    with mounted_ext4(tmp_path / "mixed") as store:
        with mounted_tmpfs(store / "docker/blobs", "size=1m"):
            assert device_in_order(store) is None
        assert device_in_order(store) == os.stat(store).st_dev


async def test_a_blob_commit_waits_for_two_journal_commits(journaled: Path) -> None:
    """Flushed step by step (data, rename, directories; then the link's data, rename,
    directories) a blob's commit waited for four; now its link's data is flushed with the
    blob's, and the directories once."""
    registry = filesystem_registry(
        journaled,
        REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED="false",
    )
    registry.start()
    try:
        commits = [await _commits_of_a_blob_commit(registry.url, journaled) for _ in range(BLOBS)]
    finally:
        registry.stop()
    # The least of a few: the journal's own timer (every 5 s) may commit in between.
    assert min(commits) <= 2, commits


async def _commits_of_a_blob_commit(url: str, store: Path) -> int:
    data = os.urandom(1024 * 1024)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v2/{REPO}/blobs/uploads/") as response:
            assert response.status == 202, await response.text()
            location = _absolute(url, response.headers["Location"])
        async with session.patch(
            location, data=data, headers={"Content-Type": "application/octet-stream"}
        ) as response:
            assert response.status == 202, await response.text()
            location = _absolute(url, response.headers["Location"])
        await asyncio.sleep(SETTLE)
        before = journal_commits(store)
        async with session.put(location, params={"digest": sha256_digest(data)}) as response:
            assert response.status == 201, await response.text()
        return journal_commits(store) - before


def _absolute(url: str, location: str) -> str:
    return url + location if location.startswith("/") else location


@pytest.fixture
def traced_journaled(journaled: Path) -> Iterator[Traced]:
    with traced_registry(journaled) as traced:
        yield traced


async def test_data_first_then_names_in_order_then_one_directory(traced_journaled: Traced) -> None:
    """Each file's data is flushed before its name; the names follow in order; then one
    directory is flushed, the last name's: the journal commits every earlier change with
    it (test_power_loss.py shows each 201's push surviving a power loss)."""
    layer, manifest_hex = await _push(traced_journaled.registry.url)
    calls = traced_journaled.stop()
    layer_ack, _, manifest_ack = _created_responses(calls)
    v2 = traced_journaled.root / "docker/registry/v2"
    layer_hex = layer.split(":", 1)[1]
    blob = v2 / "blobs/sha256" / layer_hex[:2] / layer_hex / "data"
    link = v2 / "repositories" / REPO / "_layers/sha256" / layer_hex / "link"
    blob_rename, link_rename = _rename_to(calls, blob), _rename_to(calls, link)
    assert blob_rename < link_rename < layer_ack
    for destination in (blob, link):
        _assert_data_flushed_before_its_name(calls, destination)
    # The link's data was flushed before the blob was named: one commit for both.
    link_temporary = calls[link_rename].strings[0]
    assert "/.staging/" in link_temporary
    assert _data_flush_of(calls, link_temporary) < blob_rename
    # Its directory is made only once the blob is in place: online collection takes a
    # link directory whose blob is missing for a dangling link.
    assert _mkdir_of(calls, link.parent) > blob_rename
    # One directory flushed, after the last name: the link's.
    assert _directory_flushes(calls, blob_rename, link_rename) == []
    assert _directory_flushes(calls, link_rename, layer_ack) == [str(link.parent)]
    # The manifest: its blob (a write of its own: its directory alone, not the bucket
    # its mkdir changed), then its links as one list, the tag's current link last.
    manifest = v2 / "blobs/sha256" / manifest_hex[:2] / manifest_hex / "data"
    tag = v2 / "repositories" / REPO / "_manifests/tags/latest"
    destinations = [
        manifest,
        v2 / "repositories" / REPO / "_manifests/revisions/sha256" / manifest_hex / "link",
        tag / "index/sha256" / manifest_hex / "link",
        tag / "current/link",
    ]
    renames = [_rename_to(calls, destination) for destination in destinations]
    assert renames == sorted(renames) and renames[-1] < manifest_ack
    for destination in destinations:
        _assert_data_flushed_before_its_name(calls, destination)
    assert _directory_flushes(calls, renames[0], renames[1]) == [str(manifest.parent)]
    assert _directory_flushes(calls, renames[1], renames[-1]) == []
    assert _directory_flushes(calls, renames[-1], manifest_ack) == [str(tag / "current")]
    assert list((traced_journaled.root / ".staging").iterdir()) == []


def _assert_data_flushed_before_its_name(calls: Sequence[Call], destination: Path) -> None:
    rename = _rename_to(calls, destination)
    source = calls[rename].strings[0]
    assert _data_flush_of(calls, source) < rename, f"{destination} named before its data"


def _directory_flushes(calls: Sequence[Call], start: int, end: int) -> list[str]:
    """What was ``fsync``'d between the calls ``start`` and ``end`` (a file's data is
    flushed with ``fdatasync``: these are directories)."""
    return [c.fd_path or "" for c in calls[start:end] if c.name == "fsync"]


def _rename_to(calls: Sequence[Call], destination: Path) -> int:
    return next(
        i
        for i, c in enumerate(calls)
        if c.name.startswith("rename") and c.strings[-1:] == (str(destination),)
    )


def _data_flush_of(calls: Sequence[Call], path: str) -> int:
    return next(
        i
        for i, c in enumerate(calls)
        if c.name in ("fsync", "fdatasync") and c.fd_path == path and c.result == 0
    )


def _mkdir_of(calls: Sequence[Call], directory: Path) -> int:
    return next(
        i
        for i, c in enumerate(calls)
        if c.name.startswith("mkdir") and str(directory) in c.strings and c.result == 0
    )


async def test_without_a_journal_each_name_is_flushed_before_the_next(tmp_path: Path) -> None:
    """Where directory changes are not committed in order (ext4 without a journal), the
    blob's directories are flushed before the link is named: a link never outlives its
    blob across a power loss."""
    with mounted_ext4(tmp_path, journal=False) as store, traced_registry(store) as traced:
        layer, _ = await _push(traced.registry.url)
        calls = traced.stop()
    layer_ack = _created_responses(calls)[0]
    v2 = traced.root / "docker/registry/v2"
    layer_hex = layer.split(":", 1)[1]
    blob = v2 / "blobs/sha256" / layer_hex[:2] / layer_hex / "data"
    link = v2 / "repositories" / REPO / "_layers/sha256" / layer_hex / "link"
    link_rename = _rename_to(calls, link)
    for directory in (blob.parent, blob.parent.parent):
        flushes = [
            i for i, c in enumerate(calls) if c.name == "fsync" and c.fd_path == str(directory)
        ]
        assert flushes and min(flushes) < link_rename < layer_ack, directory


async def test_no_space_at_a_commits_flush_answers_507_and_drops_the_upload(
    journaled: Path,
) -> None:
    """The data's flush of a blob commit finding no space (injected into the real
    server's fdatasync): 507 STORAGE_FULL and the upload removed, as with every other
    write that finds the disk full, never a 500."""
    registry = filesystem_registry(
        journaled, REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED="false"
    )
    registry.start()
    try:
        assert registry.process is not None
        data = os.urandom(64 * 1024)
        url = registry.url
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v2/{REPO}/blobs/uploads/") as response:
                location = _absolute(url, response.headers["Location"])
            async with session.patch(location, data=data) as response:
                assert response.status == 202, await response.text()
                location = _absolute(url, response.headers["Location"])
            trace = SyscallTrace(
                registry.process.pid, journaled / "strace.log", inject="fdatasync:error=ENOSPC"
            )
            try:
                async with session.put(
                    location, params={"digest": sha256_digest(data)}
                ) as response:
                    assert response.status == 507, await response.text()
                    assert (await response.json())["errors"][0]["code"] == "STORAGE_FULL"
            finally:
                trace.close()
            async with session.get(location) as response:
                assert response.status == 404, await response.text()
    finally:
        registry.stop()


async def test_a_commit_racing_a_delete_of_what_it_named_is_still_acknowledged(
    journaled: Path,
) -> None:
    """Another process deletes the layer link a blob commit has just named, before the
    commit's directories are flushed at the end of its list: the flush passes over the
    directory that is gone (the delete came after; making it durable is the delete's
    business), and the push is acknowledged, not answered 500."""
    data = os.urandom(64 * 1024)
    digest = sha256_digest(data)
    store = journaled / "data"
    settings = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(store),
        "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED": "false",
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_HTTP_SECRET": "one-secret-for-both",
    }
    pushing, deleting = journaled / "pushing", journaled / "deleting"
    pushing.mkdir()
    deleting.mkdir()
    pusher, deleter = registry_process(pushing, **settings), registry_process(deleting, **settings)
    pusher.start()
    deleter.start()
    try:
        assert pusher.process is not None
        link = (
            store
            / "docker/registry/v2/repositories"
            / REPO
            / "_layers"
            / digest.replace(":", "/")
            / "link"
        )
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{pusher.url}/v2/{REPO}/blobs/uploads/") as response:
                location = _absolute(pusher.url, response.headers["Location"])
            async with session.patch(location, data=data) as response:
                assert response.status == 202, await response.text()
                location = _absolute(pusher.url, response.headers["Location"])
            # The upload's removal, the list's last step before the flushes, slowed: a
            # window after the link is named.
            trace = SyscallTrace(
                pusher.process.pid,
                pushing / "strace.log",
                inject="unlinkat,rmdir:delay_enter=1s",
            )
            try:
                put = asyncio.ensure_future(session.put(location, params={"digest": digest}))
                deadline = asyncio.get_running_loop().time() + 30
                while not link.exists():
                    assert not put.done(), await (await put).text()
                    assert asyncio.get_running_loop().time() < deadline, "never linked"
                    await asyncio.sleep(0.02)
                async with session.delete(f"{deleter.url}/v2/{REPO}/blobs/{digest}") as gone:
                    assert gone.status == 202, await gone.text()
                async with await put as response:
                    assert response.status == 201, await response.text()
            finally:
                trace.close()
    finally:
        pusher.stop()
        deleter.stop()
