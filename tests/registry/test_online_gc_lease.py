"""A collector's lease (docs/online-gc.md, "A collector's lease"): a collector killed with
SIGKILL while its condemned record names a blob stops holding pushes of that blob back
within seconds, while a live collector, however long it pauses, holds them back for as
long as it renews its lease, and deletes nothing once it has lost it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from registry.keys import STORAGE
from registry.storage import leases
from registry.storage.gc import GarbageCollector
from registry.storage.gc_safety import CollectionBusy
from tests.registry.conftest import ClientFactory
from tests.registry.helpers import Blob, assert_2xx, assert_error, push_blob, put_manifest, send
from tests.registry.test_online_gc_ordering import (
    NAME,
    backdate,
    manifest,
    old_unreferenced_layer,
    pause_after,
)
from tests.support.portside_servers import REPOSITORY_ROOT, server_env

GRACE = 30.0
GARBAGE = 5000  # old unreferenced blobs: the killed run is still deleting them


def last_sorting_layer(label: str) -> Blob:
    """A layer whose digest sorts after (almost) every other: deleted last by a run."""
    for salt in range(1_000_000):
        blob = Blob(f"layer {label} {salt}".encode())
        if blob.digest.startswith("sha256:fff"):
            return blob
    raise AssertionError("unreachable")


def write_garbage(root: Path, count: int) -> None:
    """Old blobs no manifest names, written straight into the store."""
    then = time.time() - 10 * GRACE
    blobs = root / "docker/registry/v2/blobs/sha256"
    for index in range(count):
        data = b"garbage %d" % index
        hex_digest = hashlib.sha256(data).hexdigest()
        directory = blobs / hex_digest[:2] / hex_digest
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").write_bytes(data)
        os.utime(directory / "data", (then, then))


def written(records: Path) -> list[Path]:
    """The records in place (a record being written is a hidden temporary file)."""
    if not records.is_dir():
        return []
    return [path for path in records.iterdir() if not path.name.startswith(".")]


async def test_a_sigkilled_collector_stops_holding_pushes_within_its_lease_expiry(
    make_registry: ClientFactory, registry_environ: dict[str, str], tmp_path: Path
) -> None:
    client = await make_registry({"REGISTRY_STORAGE_GC_GRACEPERIOD": f"{GRACE:.0f}s"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    config, layer = Blob(b"{}"), last_sorting_layer("killed")
    for blob in (config, layer):
        assert_2xx(await push_blob(client, NAME, blob))
    old = manifest(config, layer)
    assert_2xx(await put_manifest(client, NAME, "old", old))
    assert_2xx(await send(client, "DELETE", f"/v2/{NAME}/manifests/{Blob(old).digest}"))
    backdate(root, layer, 10 * GRACE)
    await asyncio.to_thread(write_garbage, root, GARBAGE)
    config_file = tmp_path / "gc.yml"
    config_file.write_text("version: 0.1\n")
    records = root / "docker/registry/v2/_gc/condemned"
    collector = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "registry", "garbage-collect", "-q", str(config_file)),
        cwd=REPOSITORY_ROOT,
        env=server_env({**registry_environ, "REGISTRY_STORAGE_GC_GRACEPERIOD": f"{GRACE:.0f}s"}),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not written(records):
            assert collector.returncode is None, "the collector finished before it was killed"
            assert time.monotonic() < deadline, "the collector wrote no record within 60 s"
            await asyncio.sleep(0.005)
        collector.send_signal(signal.SIGKILL)
    finally:
        if collector.returncode is None:
            collector.kill()
        await collector.wait()
    hex_digest = layer.digest.split(":", 1)[1]
    data = root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    assert data.exists(), "the run was killed too late: it had deleted the layer already"
    record = written(records)[0].read_text()
    assert layer.digest in record.split(), "the killed run's record names the layer"

    # A client told the layer exists pushes a manifest naming it: the dead run's record
    # holds it back only until its lease is seen unchanged for leases.EXPIRY seconds.
    assert (await send(client, "HEAD", f"/v2/{NAME}/blobs/{layer.digest}")).status == 200
    new_config = Blob(b'{"new": true}')
    assert_2xx(await push_blob(client, NAME, new_config))
    started = time.monotonic()
    reply = await put_manifest(client, NAME, "new", manifest(new_config, layer))
    waited = time.monotonic() - started
    assert reply.status == 201, reply
    # Held back while the lease might still be renewed, released well before the 60 s a
    # push waits at most (the old record held pushes for two hours).
    assert leases.EXPIRY * 0.9 <= waited < leases.EXPIRY + 20, waited
    pulled = await send(client, "GET", f"/v2/{NAME}/blobs/{layer.digest}")
    assert pulled.status == 200 and pulled.body == layer.data


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases four times shorter, so a pause can outlast several expiries quickly (a
    loaded machine stalls the test's event loop for tenths of a second: HOLD stays well
    above that)."""
    monkeypatch.setattr(leases, "RENEW", 0.5)
    monkeypatch.setattr(leases, "EXPIRY", 2.0)
    monkeypatch.setattr(leases, "HOLD", 1.5)


@pytest.mark.usefixtures("short_leases")
async def test_a_live_collector_renews_its_lease_through_a_long_pause(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    """Paused for three lease expiries before it deletes, a collector still holds the PUT
    back (it renews), then deletes the blob: the PUT is refused, never acknowledged."""
    client = await make_registry({"REGISTRY_STORAGE_GC_GRACEPERIOD": f"{GRACE:.0f}s"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    layer = await old_unreferenced_layer(client, root, "paused")
    collector = GarbageCollector(client.app[STORAGE], grace=GRACE)
    reached, release = asyncio.Event(), asyncio.Event()
    pause_after(collector.safety, "condemn", reached, release)
    collection = asyncio.create_task(collector.run())
    await asyncio.wait_for(reached.wait(), timeout=30)
    new_config = Blob(b'{"new": true}')
    assert_2xx(await push_blob(client, NAME, new_config))
    put = asyncio.create_task(put_manifest(client, NAME, "new", manifest(new_config, layer)))
    await asyncio.sleep(3 * leases.EXPIRY)
    assert not put.done(), "a renewed lease must keep holding the PUT back"
    release.set()
    report = await asyncio.wait_for(collection, timeout=30)
    assert layer.digest in {str(d) for d, _ in report.blobs}
    assert_error(await asyncio.wait_for(put, timeout=30), 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.usefixtures("short_leases")
async def test_a_collector_that_cannot_renew_deletes_nothing(
    make_registry: ClientFactory, registry_environ: dict[str, str]
) -> None:
    """A run whose renewals stop (a stalled storage, a starved process) gives up before
    any reader may ignore its record: the blob stays and the PUT is acknowledged."""
    client = await make_registry({"REGISTRY_STORAGE_GC_GRACEPERIOD": f"{GRACE:.0f}s"})
    root = Path(registry_environ["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"])
    layer = await old_unreferenced_layer(client, root, "stalled")
    collector = GarbageCollector(client.app[STORAGE], grace=GRACE)
    reached, release = asyncio.Event(), asyncio.Event()
    pause_after(collector.safety, "condemn", reached, release)
    collection = asyncio.create_task(collector.run())
    await asyncio.wait_for(reached.wait(), timeout=30)
    lease = collector.safety.lease
    assert lease._task is not None
    lease._task.cancel()  # its renewals stop, as when the storage stalls
    new_config = Blob(b'{"new": true}')
    assert_2xx(await push_blob(client, NAME, new_config))
    body = manifest(new_config, layer)
    reply = await asyncio.wait_for(put_manifest(client, NAME, "new", body), timeout=30)
    assert reply.status == 201, reply
    release.set()
    with pytest.raises(CollectionBusy):
        await asyncio.wait_for(collection, timeout=30)
    pulled = await send(client, "GET", f"/v2/{NAME}/blobs/{layer.digest}")
    assert pulled.status == 200 and pulled.body == layer.data
