"""``python -m bench.logging_cost``: what logging costs per request, in CPU time.

On a shared machine requests per second swing with the neighbours' load; the CPU time a
server spends per request swings much less. For each portside revision given, interleaved
run after run, this serves one request type under wrk and reads from ``/proc`` the CPU time
of the whole server process and of its event-loop thread (the main thread) per request
(the revisions' order alternates from run to run):

- ``tokenauth``: token issuance with Basic re-authentication (the ``tokens`` scenario's
  request), at ``loglevel: info`` (an audit and an access line per token) or ``error``;
- ``registry``: manifest GET by tag, at ``log.level: info`` with the access log on (the
  production configuration) or ``error`` with it off.

    .venv/bin/python -m bench.logging_cost --revs fd84d62,HEAD --runs 4
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.machine import export_revision
from bench.procstat import cpu_seconds, thread_cpu_seconds
from bench.servers import clean_environ, free_port, registry_config
from shared.htpasswd import format_htpasswd_line

USER = "bench"
PASSWORD = "bench-password-0123456789"  # noqa: S105 - a throwaway account on loopback
ISSUANCE_PATH = "/auth?service=svc&scope=repository:a/b:pull,push&account=bench"
MANIFEST_PATH = "/v2/a/b/manifests/t"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the server process and of its main (event-loop) thread."""
    return cpu_seconds(pid), thread_cpu_seconds(pid, pid)


def _request(port: int, method: str, path: str, body: bytes = b"", **headers: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _wait(port: int, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _request(port, "GET", path)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not answer")


def _tokenauth(tree: Path, work: Path, level: str) -> tuple[list[str], int, str, dict[str, str]]:
    """The command, port, path and headers of tokenauth serving token requests."""
    key, certificate = str(work / "token.key"), str(work / "token.crt")
    subprocess.run(
        [sys.executable, "-m", "tokenauth", "keygen", "--key", key, "--certificate", certificate],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    (work / "users").write_text(format_htpasswd_line(USER, PASSWORD, cost=10) + "\n")
    (work / "acl.yml").write_text('acl:\n  - match: {account: bench}\n    actions: ["*"]\n')
    port = free_port()
    (work / "tokenauth.yml").write_text(
        f"http:\n  addr: 127.0.0.1:{port}\ntoken:\n  issuer: i\n  services: [svc]\n"
        "  key: token.key\n  certificate: token.crt\nusers: [users]\nacl: acl.yml\n"
        f"loglevel: {level}\n"
    )
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    command = [sys.executable, "-m", "tokenauth", "serve", str(work / "tokenauth.yml")]
    return command, port, ISSUANCE_PATH, {"Authorization": f"Basic {basic}"}


def _registry(work: Path, level: str) -> tuple[list[str], int, str, dict[str, str]]:
    port = free_port()
    text = registry_config(work / "root", port, access_log=level == "info")
    (work / "registry.yml").write_text(text)
    command = [sys.executable, "-m", "registry", "serve", str(work / "registry.yml")]
    return command, port, MANIFEST_PATH, {"Accept": OCI_MANIFEST}


def _seed_manifest(port: int) -> None:
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert _request(port, "POST", f"/v2/a/b/blobs/uploads/?digest={digest}", config) == 201
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest}
        | {"size": len(config)},
        "layers": [],
    }
    body = json.dumps(manifest).encode()
    assert _request(port, "PUT", MANIFEST_PATH, body, **{"Content-Type": OCI_MANIFEST}) == 201


def measure(tree: Path, service: str, level: str, seconds: int) -> tuple[float, float, float]:
    """(requests/s, process CPU µs per request, event-loop thread CPU µs per request)."""
    with tempfile.TemporaryDirectory(prefix="logging-cost-") as scratch:
        work = Path(scratch)
        if service == "tokenauth":
            command, port, path, headers = _tokenauth(tree, work, level)
        else:
            command, port, path, headers = _registry(work, level)
        with (work / "server.log").open("wb") as log:
            server = subprocess.Popen(
                command, cwd=tree, env=clean_environ(), stdout=log, stderr=log
            )
        try:
            _wait(port, path if service == "tokenauth" else "/v2/")
            if service == "registry":
                _seed_manifest(port)
            before = _cpu(server.pid)
            wrk = ["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"]
            for name, value in headers.items():
                wrk += ["-H", f"{name}: {value}"]
            output = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
            after = _cpu(server.pid)
        finally:
            server.terminate()
            server.wait(60)
    found = re.search(r"(\d+) requests in", output)
    count = int(found.group(1)) if found else 0
    if not count:
        raise RuntimeError(f"wrk completed no request:\n{output}")
    per_request = [(a - b) / count * 1e6 for a, b in zip(after, before, strict=True)]
    return count / seconds, per_request[0], per_request[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.logging_cost", description=__doc__)
    parser.add_argument("--revs", default="HEAD", help="comma-separated git revisions")
    parser.add_argument("--runs", type=int, default=4, help="interleaved runs per case")
    parser.add_argument("--seconds", type=int, default=4, help="the length of each wrk run")
    args = parser.parse_args(argv)
    revs = [r.strip() for r in args.revs.split(",") if r.strip()]
    cases = [(s, lv) for s in ("tokenauth", "registry") for lv in ("info", "error")]
    with tempfile.TemporaryDirectory(prefix="logging-cost-src-") as sources:
        trees = {}
        for rev in revs:
            trees[rev] = Path(sources) / rev.replace("/", "_")
            trees[rev].mkdir()
            export_revision(rev, trees[rev])
        results: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
        for run in range(args.runs):
            # The order alternates (A B, then B A): the second of a pair measured slower
            # more often than not on a busy machine.
            order = revs if run % 2 == 0 else revs[::-1]
            for service, level in cases:
                for rev in order:
                    sample = measure(trees[rev], service, level, args.seconds)
                    results.setdefault((service, level, rev), []).append(sample)
    print("service    level  revision      req/s   process µs/req  loop µs/req  (medians)")
    for (service, level, rev), samples in results.items():
        rate, process, loop = (statistics.median(column) for column in zip(*samples, strict=True))
        print(f"{service:10} {level:6} {rev:12} {rate:7,.0f}   {process:8.0f}  {loop:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
