"""The walk for killed writers' temporaries, a whole-store listing, no longer adds to a
collection's wall time: it runs in a child process (on another core, never holding the
collector's interpreter lock) started before reading, instead of in a thread after the
sweeps. Checked from ``strace -f`` of a real ``registry garbage-collect``: which process
removed the temporary, and when its walk began."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from bench.scenarios.gc import PER_REPOSITORY, seed_gc_store
from bench.servers import clean_environ, registry_config
from tests.support.tools import require_tool

_LINE = re.compile(r"^(?P<pid>\d+) +(?P<name>\w+)\((?P<rest>.*)$")


def _calls(log: Path) -> list[tuple[int, str, str]]:
    """(pid, syscall, the rest of the line) in the order strace wrote them."""
    calls = []
    for line in log.read_text().splitlines():
        found = _LINE.match(line)
        if found is not None:  # "<... resumed>" halves name no call
            calls.append((int(found["pid"]), found["name"], found["rest"]))
    return calls


def test_the_walk_runs_in_a_child_process_begun_before_any_deletion(tmp_path: Path) -> None:
    strace = require_tool("strace")
    root = tmp_path / "root"
    seed_gc_store(root, PER_REPOSITORY)  # 40 untagged manifests: deletions to come
    config = tmp_path / "config.yml"
    config.write_text(registry_config(root, 0))
    hidden = root / "docker/registry/v2/repositories/org00/repo0000/_layers"
    temporary = hidden / f".link.{uuid.uuid4().hex}.tmp"  # as a killed writer leaves it
    temporary.write_text("half")
    log = tmp_path / "strace.log"
    done = subprocess.run(
        [
            *(strace, "-f", "-qq", "-s", "256", "-o", str(log)),
            *("-e", "trace=execve,unlink,unlinkat,rmdir"),
            *(sys.executable, "-m", "registry", "garbage-collect", "-m", "-q", str(config)),
        ],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=Path(__file__).parents[3],
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 temporary files of killed writers" in done.stdout
    assert not temporary.exists()
    calls = _calls(log)
    collector = calls[0][0]  # strace's child: the command's own process
    removal = [pid for pid, name, rest in calls if temporary.name in rest and "unlink" in name]
    assert len(removal) == 1
    walker = removal[0]
    # A process of its own: it began with an exec (the collector's threads never do).
    started = [i for i, (pid, name, _) in enumerate(calls) if pid == walker and name == "execve"]
    assert walker != collector and started
    # Begun before the sweeps' first deletion of a directory, not after the sweeps.
    first_removal = next(
        i
        for i, (pid, name, rest) in enumerate(calls)
        if pid != walker and (name == "rmdir" or "AT_REMOVEDIR" in rest)
    )
    assert started[0] < first_removal
