"""``http.debug.prometheus``: the registry's metrics on its debug address, counted as a real
client (skopeo) pushes, and summed over every worker of ``--workers N``."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.metrics import Scrape, parse, scrape
from tests.support.oci import make_image, write_oci_layout
from tests.support.portside_servers import (
    FILESYSTEM_CONFIG,
    ServerProcess,
    filesystem_registry,
    free_port,
    run_python_module,
)
from tests.support.supervised import children, wait_for, wait_for_replacement, wait_for_workers
from tests.support.tools import isolated_client_env, require_tool, run_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _status(url: str, method: str = "GET", body: bytes | None = None) -> int:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url, data=body, method=method, headers={"Content-Type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _metrics_registry(tmp_path: Path, **settings: str) -> tuple[ServerProcess, str]:
    debug_port = free_port()
    registry = filesystem_registry(
        tmp_path,
        REGISTRY_HTTP_DEBUG_ADDR=f"127.0.0.1:{debug_port}",
        REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED="true",
        **settings,
    )
    return registry, f"http://127.0.0.1:{debug_port}/metrics"


async def test_a_push_is_counted_by_route_upload_and_media_type(tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    image = make_image(layer_count=2, layer_size=40 * 1024)
    write_oci_layout(tmp_path / "source", image, tag="v1")
    registry, metrics_url = _metrics_registry(
        tmp_path, REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR="inmemory"
    )
    registry.start()
    try:
        target = f"docker://{registry.address}/metrics/app:v1"
        env = isolated_client_env(str(tmp_path / "home"))
        pushed = await run_tool(
            skopeo,
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'source'}:v1",
            target,
            env=env,
        )
        assert pushed.returncode == 0, pushed.stderr
        after_push = scrape(metrics_url)
        layer = f"{registry.url}/v2/metrics/app/blobs/{next(iter(image.blobs))}"
        assert _status(layer, "HEAD") == 200
        assert _status(layer, "HEAD") == 200
        # An upload whose content is not what its digest says fails.
        wrong = f"{registry.url}/v2/metrics/app/blobs/uploads/?digest=sha256:{'0' * 64}"
        assert _status(wrong, "POST", b"not that") == 400
        # A path a client makes up is counted under one label, never as itself.
        assert _status(f"{registry.url}/v2/made/up/path/{'x' * 50}") == 404
        after = scrape(metrics_url)
    finally:
        registry.stop()

    blobs = len(image.blobs)  # the layers and the config
    assert after_push.value("registry_uploads_total", event="completed") == blobs
    assert after_push.value("registry_uploads_total", event="started") == blobs
    assert after_push.value("registry_uploads_total", event="failed") == 0
    assert after_push.value("registry_manifests_pushed_total", media_type=OCI_MANIFEST) == 1
    assert after_push.value("registry_manifests_pushed_total") == 1
    put_manifest = {"handler": "manifest", "method": "PUT", "code": "201"}
    assert after_push.value("registry_http_requests_total", **put_manifest) == 1
    assert (
        after_push.value(
            "registry_http_request_duration_seconds_count", handler="manifest", method="PUT"
        )
        == 1
    )
    # Every byte skopeo sent was a blob or the manifest.
    sent_by_client = sum(len(b) for b in image.blobs.values()) + len(image.manifest)
    assert after_push.value("registry_http_request_bytes_total") == sent_by_client
    assert after_push.value("registry_storage_action_seconds_count", driver="filesystem") > 0
    assert after_push.value("registry_storage_action_seconds_count", action="put_content") > 0
    assert after_push.value("registry_storage_errors_total") == 0

    head = {"handler": "blob", "method": "HEAD", "code": "200"}
    assert after.value("registry_http_requests_total", **head) == (
        after_push.value("registry_http_requests_total", **head) + 2
    )
    hits = after.value("registry_storage_cache_total", type="hit")
    assert hits >= after_push.value("registry_storage_cache_total", type="hit") + 2
    assert after.value("registry_http_requests_total", handler="unknown", code="404") == 1
    assert after.label_values("handler") <= {
        "base", "root", "manifest", "blob", "upload_start", "upload", "tags", "referrers",
        "catalog", "unknown",
    }  # fmt: skip
    assert after.value("registry_http_in_flight_requests") == 0
    assert after.value("registry_uploads_total", event="failed") == 1
    assert after.value("registry_uploads_total", event="started") == blobs + 1
    assert after.value("registry_uploads_total", event="completed") == blobs


def test_metrics_are_off_unless_enabled(tmp_path: Path) -> None:
    debug_port = free_port()
    registry = filesystem_registry(tmp_path, REGISTRY_HTTP_DEBUG_ADDR=f"127.0.0.1:{debug_port}")
    registry.start()
    try:
        assert _status(f"http://127.0.0.1:{debug_port}/metrics") == 404
    finally:
        registry.stop()


def _base_requests(scraped: Scrape) -> float:
    return scraped.value("registry_http_requests_total", handler="base", code="200")


def _served_by(samples: Path, pid: int, tmp_path: Path) -> float:
    """The GET /v2/ requests one worker counted: its own file, read alone."""
    alone = tmp_path / f"worker-{pid}"
    alone.mkdir()
    shutil.copy(samples / f"counter_{pid}.db", alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
    return _base_requests(parse(generate_latest(registry).decode()))


def _scrapes_until(url: str, requests: float) -> None:
    """Scrape until ``requests`` GET /v2/ are counted: each worker adds its counts to the
    shared files every second (the one answering, at once)."""
    wait_for(f"{requests} requests in the scrape", lambda: _base_requests(scrape(url)) == requests)


def test_workers_add_up_and_a_killed_worker_keeps_its_counts(tmp_path: Path) -> None:
    # The supervisor makes its directory under TMPDIR: here, where the test can see it.
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    registry, metrics_url = _metrics_registry(tmp_path, PORTSIDE_WORKERS="2", TMPDIR=str(tmpdir))
    registry.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    registry.start()
    try:
        assert registry.process is not None
        supervisor = registry.process.pid
        wait_for_workers(supervisor, 2)
        requests = 40  # a new connection each: the kernel spreads them over both workers
        for _ in range(requests):
            assert _status(f"{registry.url}/v2/") == 200
        _scrapes_until(metrics_url, requests)
        [samples] = list(tmpdir.glob("portside-metrics-*"))
        served = {pid: _served_by(samples, pid, tmp_path) for pid in children(supervisor)}
        assert sum(served.values()) == requests
        victim = max(served, key=lambda pid: served[pid])
        os.kill(victim, signal.SIGKILL)
        wait_for_replacement(supervisor, victim, 2)
        # Whichever worker answers the scrape, the killed one's requests are still in it.
        for _ in range(5):
            assert _base_requests(scrape(metrics_url)) == requests
        assert _status(f"{registry.url}/v2/") == 200
        _scrapes_until(metrics_url, requests + 1)
        assert scrape(metrics_url).value("registry_http_in_flight_requests") == 0
        time.sleep(2)  # every worker flushed again: nothing is counted twice
        assert _base_requests(scrape(metrics_url)) == requests + 1
    finally:
        registry.stop()
    assert not list(tmpdir.glob("portside-metrics-*")), "the metrics directory was left behind"


def test_a_collection_reaches_the_scrape_through_a_shared_directory(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(samples)}
    registry, metrics_url = _metrics_registry(tmp_path, **shared)
    orphan = b"a blob no manifest references"
    digest = "sha256:" + hashlib.sha256(orphan).hexdigest()
    registry.start()
    try:
        upload = f"{registry.url}/v2/gc/orphan/blobs/uploads/?digest={digest}"
        assert _status(upload, "POST", orphan) == 201
        assert scrape(metrics_url).value("registry_gc_runs_total") == 0
        config = tmp_path / "config.yml"
        config.write_text(
            FILESYSTEM_CONFIG.format(root=tmp_path / "data", port=free_port())
            + "  debug:\n    prometheus:\n      enabled: true\n"
        )
        # No grace period: the blob was just uploaded, and the collection must take it.
        offline = {**shared, "REGISTRY_STORAGE_GC_GRACEPERIOD": "0s"}
        run_python_module("registry", "garbage-collect", "--dry-run", str(config), env=offline)
        assert scrape(metrics_url).value("registry_gc_runs_total") == 0
        run_python_module("registry", "garbage-collect", str(config), env=offline)
        after = scrape(metrics_url)
    finally:
        registry.stop()
    assert after.value("registry_gc_runs_total") == 1
    assert after.value("registry_gc_freed_bytes_total") == len(orphan)
    assert after.value("registry_gc_duration_seconds_count") == 1


def test_metrics_without_a_debug_address_are_refused_with_a_warning(tmp_path: Path) -> None:
    registry = filesystem_registry(tmp_path, REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED="true")
    registry.start()
    try:
        assert _status(f"{registry.url}/metrics") == 404  # never on the API's address
    finally:
        registry.stop()
    assert "no metrics are served: set http.debug.addr" in registry.log()
