"""A bound on the shutdown half of the registry's cleanup contexts.

A registry that is told to stop must stop. Each cleanup context (storage and its upkeep
tasks, the cache, health checks, mirrors, notifications) gets ``SHUTDOWN_SECONDS`` to
finish after the server has stopped serving; one that overruns (an upkeep task that does
not end when cancelled, a client whose close waits on a peer that never answers) is
cancelled with a warning naming it, and the next one's shutdown runs. Start-up is not
bounded: a context that cannot start fails the start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

log = logging.getLogger("registry.shutdown")

SHUTDOWN_SECONDS = 20.0

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def bounded(context: CleanupContext, seconds: float = SHUTDOWN_SECONDS) -> CleanupContext:
    """``context`` with its part after ``yield`` cut off after ``seconds``."""
    name = getattr(context, "__name__", repr(context))

    async def run(app: web.Application) -> AsyncIterator[None]:
        steps = context(app)
        await anext(steps)
        yield
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                await anext(steps, None)
        except TimeoutError:
            if not deadline.expired():
                raise  # the context's own error, not the bound
            log.warning(
                "shutdown: %s did not finish within %.0f s and was cancelled", name, seconds
            )

    run.__name__ = name
    return run
