"""Debian's Prometheus scrapes both services of a token deployment while skopeo pushes an
image; PromQL over Prometheus' HTTP API must count exactly what was done."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deployments import PASSWORDS, TokenDeployment, start_token_deployment
from tests.support.metrics import scrape
from tests.support.oci import make_image, write_oci_layout
from tests.support.portside_servers import free_port
from tests.support.tools import isolated_client_env, require_tool, run_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
# Grafana's variables, as Grafana would fill them in.
_VARIABLES = {
    "$registry_job": ".*",
    "$tokenauth_job": ".*",
    "$__rate_interval": "1m",
    "$__range": "1h",
}


class Prometheus:
    """``prometheus`` with its config and TSDB in a directory of the test's."""

    def __init__(self, binary: str, directory: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return bytes(response.read())

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                self._get("/-/ready")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()}")

    def accepts(self, promql: str) -> bool:
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return bool(json.loads(self._get(path))["status"] == "success")

    def query(self, promql: str) -> float | None:
        """The value of an instant query that yields one sample; None when it yields none."""
        body = json.loads(self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def eventually(self, promql: str, expected: float, timeout: float = 60.0) -> None:
        """Wait until ``promql`` gives ``expected`` (scrapes are a second apart)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.query(promql)
            if value == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{promql} = {value}, expected {expected}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[TokenDeployment]:
    (tmp_path / "deployment").mkdir()
    running = start_token_deployment(tmp_path / "deployment", metrics=True)
    try:
        yield running
    finally:
        running.stop()


def _granted_in_audit_log(deployment: TokenDeployment) -> int:
    lines = [line for line in deployment.tokenauth.log().splitlines() if "tokenauth.audit" in line]
    # The JSON object, then (text format) the line's key=value fields.
    decoder = json.JSONDecoder()
    return sum(
        decoder.raw_decode(line, line.index("{"))[0]["outcome"] == "granted" for line in lines
    )


async def test_prometheus_counts_a_push(tmp_path: Path, deployment: TokenDeployment) -> None:
    binary = require_tool("prometheus")
    skopeo = require_tool("skopeo")
    image = make_image(layer_count=3, layer_size=32 * 1024, seed="prometheus")
    write_oci_layout(tmp_path / "source", image, tag="v1")
    assert deployment.registry_debug is not None and deployment.tokenauth_debug is not None
    prometheus = Prometheus(
        binary,
        tmp_path,
        {"registry": deployment.registry_debug, "tokenauth": deployment.tokenauth_debug},
    )
    try:
        prometheus.wait_ready()
        prometheus.eventually('up{job="registry"}', 1)
        prometheus.eventually('up{job="tokenauth"}', 1)
        pushed = await run_tool(
            skopeo,
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"admin:{PASSWORDS['admin']}",
            f"oci:{tmp_path / 'source'}:v1",
            f"docker://{deployment.registry.address}/admin/metrics:v1",
            env=isolated_client_env(str(tmp_path / "home")),
        )
        assert pushed.returncode == 0, pushed.stderr

        blobs = len(image.blobs)  # three layers and the config
        prometheus.eventually('sum(registry_uploads_total{event="completed"})', blobs)
        prometheus.eventually('sum(registry_uploads_total{event="started"})', blobs)
        prometheus.eventually(
            f'sum(registry_manifests_pushed_total{{media_type="{OCI_MANIFEST}"}})', 1
        )
        prometheus.eventually(
            'sum(registry_http_requests_total{handler="manifest",method="PUT",code="201"})', 1
        )
        sent = sum(len(blob) for blob in image.blobs.values()) + len(image.manifest)
        prometheus.eventually("sum(registry_http_request_bytes_total)", sent)
        # Every token tokenauth's audit log says it granted, and nothing it refused.
        granted = _granted_in_audit_log(deployment)
        assert granted >= 1
        prometheus.eventually(
            'sum(tokenauth_token_requests_total{outcome="granted",grant_type="basic"})', granted
        )
        assert prometheus.query('tokenauth_token_requests_total{outcome!="granted"}') is None
        # One bcrypt check: skopeo's later logins with the same password are remembered.
        prometheus.eventually('sum(tokenauth_bcrypt_check_seconds_count{result="match"})', 1)
        assert (
            prometheus.query('sum(registry_storage_action_seconds_count{driver="filesystem"})') or 0
        ) > 0
        _check_dashboard(prometheus, deployment)
    finally:
        prometheus.stop()


def _check_dashboard(prometheus: Prometheus, deployment: TokenDeployment) -> None:
    """Every query of docs/grafana-dashboard.json is valid PromQL naming a metric that the
    services export (a renamed metric would leave a panel empty without an error)."""
    exported = set()
    for debug in (deployment.registry_debug, deployment.tokenauth_debug):
        scraped = scrape(f"http://{debug}/metrics")
        exported |= {name for name, _ in scraped.samples} | scraped.families
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) > 10
    for query in queries:
        for variable, value in _VARIABLES.items():
            query = query.replace(variable, value)
        assert prometheus.accepts(query), query
        for name in re.findall(r"\b(?:registry|tokenauth)_[a-z_]+", query):
            assert name in exported, (name, query)
