"""``registry garbage-collect`` is a one-shot command timed against the reference's:
its start-up imports what collection needs, not the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Imported by ``registry serve`` only: aiohttp's server and client, TLS and ACME, the
# auth controllers. Together about 0.5 s of CPU at every start of the command.
SERVER_ONLY = ("registry.server", "registry.tls", "registry.auth.factory", "registry.acme")
# The web framework itself: the configuration and logging that every command loads once
# reached it through shared modules (checks of trusted proxies and timeouts, the request
# id of log lines); about 0.15 s of CPU of every start.
FRAMEWORK = ("aiohttp", "multidict", "yarl")

PROGRAM = f"""
import runpy, sys
FRAMEWORK = {FRAMEWORK!r}
sys.argv = ["registry", "garbage-collect", "--dry-run", "--quiet", sys.argv[1]]
try:
    runpy.run_module("registry", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(" ".join(sorted(name for name in sys.modules if name.startswith(("registry", *FRAMEWORK)))))
"""


def test_collecting_imports_no_server_module(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'root'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = done.stdout.split("\n")[-2].split()
    assert "registry.storage.gc" in imported  # it did collect
    assert not [name for name in imported if name.startswith(SERVER_ONLY)]
    assert not [name for name in imported if name.split(".")[0] in FRAMEWORK]
