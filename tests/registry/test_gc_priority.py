"""``registry garbage-collect --low-priority``: the on-demand collection beside a serving
registry takes the scheduled collection's idle CPU and I/O priority
(registry/gc_priority.py), and still collects.

The command runs in a child interpreter (so this test process keeps its own priority)
through the same entry point as ``python -m registry``, which then reports the priority
its collection ran at.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.portside_servers import FILESYSTEM_CONFIG, REPOSITORY_ROOT, server_env
from tests.support.tools import free_port

# Runs the command, then prints what it deleted and the priority it left the process at
# (the process that collected: the command does not restore it).
REPORTER = """
import contextlib, io, json, os, sys
import psutil
from registry.__main__ import main
output = io.StringIO()
with contextlib.redirect_stdout(output):
    code = main(["garbage-collect", *sys.argv[2:], sys.argv[1]])
print(json.dumps({
    "code": code,
    "output": output.getvalue(),
    "idle_cpu": os.sched_getscheduler(0) == os.SCHED_IDLE,
    "idle_io": psutil.Process().ionice().ioclass == psutil.IOPRIO_CLASS_IDLE,
}))
"""


def store_with_garbage(tmp_path: Path) -> tuple[Path, Path]:
    """A store holding one blob no manifest names (its config file, its data file)."""
    root = tmp_path / "root"
    data = b"a blob nothing references"
    hex_digest = hashlib.sha256(data).hexdigest()
    blob = root / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    config = tmp_path / "config.yml"
    config.write_text(FILESYSTEM_CONFIG.format(root=root, port=free_port()))
    return config, blob


def collect(config: Path, *flags: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", REPORTER, str(config), *flags],
        cwd=REPOSITORY_ROOT,
        # No grace: the blob was written just now (the store is not served meanwhile).
        env=server_env({"REGISTRY_STORAGE_GC_GRACEPERIOD": "0s"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert isinstance(report, dict)
    return report


@pytest.mark.parametrize("low_priority", [True, False], ids=["low-priority", "default"])
def test_low_priority_collection_runs_idle_and_still_collects(
    tmp_path: Path, low_priority: bool
) -> None:
    config, blob = store_with_garbage(tmp_path)
    report = collect(config, "--quiet", *(["--low-priority"] if low_priority else []))
    assert report["code"] == 0
    assert "deleted 1 blobs" in str(report["output"]), report
    assert not blob.exists()
    # Only when asked: an operator's run on a quiet machine keeps its full speed.
    assert report["idle_cpu"] is low_priority and report["idle_io"] is low_priority, report
