"""Watching a ``--workers`` supervisor from a test: its worker processes, and waiting
until a condition on them holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def children(pid: int) -> set[int]:
    """The pids of ``pid``'s child processes (its workers)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def wait_for(condition: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail naming ``condition`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def wait_for_workers(supervisor: int, count: int) -> None:
    """Wait until ``supervisor`` runs ``count`` workers."""
    wait_for(f"{count} workers", lambda: len(children(supervisor)) == count)


def wait_for_replacement(supervisor: int, victim: int, count: int) -> None:
    """Wait until ``supervisor`` has replaced the worker ``victim`` and runs ``count``."""
    wait_for(
        "a replacement worker",
        lambda: victim not in children(supervisor) and len(children(supervisor)) == count,
    )
