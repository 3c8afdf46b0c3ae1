"""``scripts/test`` says why tests were skipped: a skip usually means a missing tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.portside_servers import REPOSITORY_ROOT, server_env

REASON = "the reason this test was skipped"


def test_it_reports_the_reason_of_each_skip(tmp_path: Path) -> None:
    test_file = tmp_path / "test_skipping.py"
    test_file.write_text(
        f"import pytest\n\n\ndef test_skipped() -> None:\n    pytest.skip({REASON!r})\n"
    )
    completed = subprocess.run(
        [str(REPOSITORY_ROOT / "scripts" / "test"), "-p", "no:cacheprovider", str(test_file)],
        cwd=REPOSITORY_ROOT,
        env=server_env({"CI": "false"}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert REASON in completed.stdout, completed.stdout
