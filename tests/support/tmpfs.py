"""A real tmpfs mounted for one test (a small disk to fill, a read-only root), always
unmounted afterwards. Mounting needs root: elsewhere the test skips, except in CI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.support.mounts import mounted


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    """A tmpfs on ``mount_point`` (created if missing) with mount ``options``
    (``size=4m``, ``ro,size=1m``...)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    with mounted(["-t", "tmpfs", "-o", options], "tmpfs", mount_point, "a tmpfs"):
        yield mount_point
