"""The collection's child programs (the deleting children and the walk for killed
writers' temporaries) start lean: run exactly as the driver runs them, they import no
``site`` (the virtualenv's ``.pth`` files, the editable install's finder) and nothing
beyond the standard library's few modules they use and ``shared.parent_death``, found
beside their own files. Each was 40-60 ms of CPU before its first deletion, nine of them
on every collection (docs/performance.md, "Lean child programs")."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from registry.storage.driver import child_program, filesystem_delete, temporaries

# Imported by neither child, though each was before: the start-up they cost.
HEAVY = {"site", "typing", "asyncio", "logging", "pathlib", "shutil", "shared.workers"}


def _imported(program: str, root: Path) -> set[str]:
    """The modules ``program`` imports when started as the driver starts it (its
    ``-X importtime`` lines), run to its end: its input closed at once."""
    command = child_program.command(program, str(root), str(os.getpid()))
    command[1:1] = ["-X", "importtime"]
    done = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize("program", [filesystem_delete.__file__, temporaries.__file__])
def test_a_child_program_imports_no_site_and_little_else(program: str, tmp_path: Path) -> None:
    imported = _imported(program, tmp_path)
    assert "shared.parent_death" in imported  # found beside the program, without site
    heavy = HEAVY & imported
    if program == temporaries.__file__:
        heavy -= {"pathlib"}  # the walk's own: it removes by Path
    assert not heavy
