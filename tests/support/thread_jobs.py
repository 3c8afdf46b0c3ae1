"""Counting the jobs the event loop hands to threads (``run_in_executor``): each is a
worker's wake-up and, under a push load, dozens of exchanges of the GIL (issue 17), so
tests keep the write path's count from coming back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@contextlib.contextmanager
def thread_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the functions handed to threads on the running loop meanwhile."""
    loop = asyncio.get_running_loop()
    jobs: list[str] = []
    default = loop.run_in_executor

    def counting(executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        jobs.append(getattr(func, "__qualname__", repr(func)))
        return default(executor, func, *args)

    with monkeypatch.context() as patched:
        patched.setattr(loop, "run_in_executor", counting)
        yield jobs
