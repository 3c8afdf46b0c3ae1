"""``python -m bench.ui_pages``: the web interface's server time on large stores.

Seeds a filesystem store (through the storage facade) with one repository of 10,000
tags and 5,000 repositories, starts ``registry serve`` with ``ui.enabled`` (open mode:
what is timed is the page, not the token server), and times over loopback, after a
warm-up, the first and a middle page of the tag list (50 rows, each with its manifest,
config, size and platforms) and of the repository list. Prints a Markdown table of the
median and 95th percentile; the targets (docs/ui.md) are 200 ms and 300 ms.

    .venv/bin/python -m bench.ui_pages [--tags 10000] [--repositories 5000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from registry.config import load_config
from registry.oci.digest import digest_of
from registry.wiring import create_storage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def seed(root: Path, tags: int, repositories: int) -> None:
    storage = create_storage(
        load_config(None, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root)})
    )
    try:
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "created": "2026-11-01T12:00:00Z"}
        ).encode()
        layer = b"layer " * 100
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": str(digest_of(config)),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": str(digest_of(layer)),
                        "size": len(layer),
                    }
                ],
            }
        ).encode()

        async def repository(name: str, tag_names: list[str]) -> None:
            repo = storage.repository(name)
            for blob in (config, layer):
                await repo.blobs.store.put(digest_of(blob), blob)
                await repo.blobs.link(digest_of(blob))
            stored, _ = await repo.manifests.put(tag_names[0], manifest, OCI_MANIFEST)
            for start in range(1, len(tag_names), 64):
                batch = tag_names[start : start + 64]
                await asyncio.gather(*(repo.tags.tag(t, stored.digest) for t in batch))

        await repository("big/tags", [f"v{i:05d}" for i in range(tags)])
        names = [f"team-{i % 50:02d}/app-{i:05d}" for i in range(repositories)]
        for start in range(0, len(names), 32):
            await asyncio.gather(*(repository(n, ["latest"]) for n in names[start : start + 32]))
    finally:
        await storage.close()


def timed(port: int, path: str, rounds: int) -> tuple[float, float]:
    """Median and 95th percentile of ``rounds`` GETs, in ms, after 3 unmeasured ones."""
    samples = []
    for round_ in range(rounds + 3):  # the first 3 warm caches up
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        elapsed = (time.perf_counter() - started) * 1000
        connection.close()
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status}")
        if round_ >= 3:
            samples.append(elapsed)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--repositories", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portside-ui-bench-") as scratch:
        root = Path(scratch) / "data"
        started = time.monotonic()
        asyncio.run(seed(root, args.tags, args.repositories))
        print(f"seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
        sock = __import__("socket").socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        env = {
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
            "REGISTRY_UI_ENABLED": "true",
            "REGISTRY_LOG_ACCESSLOG_DISABLED": "true",
            "REGISTRY_LOG_LEVEL": "error",
            "PATH": "/usr/bin:/bin",
        }
        server = subprocess.Popen([sys.executable, "-m", "registry", "serve"], env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    timed(port, "/", 1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            middle_tag = f"v{args.tags // 2:05d}"
            middle_repo = f"team-25/app-{args.repositories // 2:05d}"
            pages = [
                (f"tags, first page (50 of {args.tags:,})", "/ui/r/big/tags/-/tags"),
                ("tags, a middle page", f"/ui/r/big/tags/-/tags?last={middle_tag}"),
                ("tags, newest-name first", "/ui/r/big/tags/-/tags?sort=name-desc"),
                (f"repositories, first page (50 of {args.repositories:,})", "/ui/"),
                ("repositories, a middle page", f"/ui/?last={middle_repo}"),
                ("repositories, filtered by prefix", "/ui/?q=team-49/"),
            ]
            print("| page | median ms | p95 ms |\n|---|---|---|")
            for label, path in pages:
                median, p95 = timed(port, path, args.rounds)
                print(f"| {label} | {median:.1f} | {p95:.1f} |")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
