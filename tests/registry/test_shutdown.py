"""The registry's cleanup contexts are bounded at shutdown (registry.shutdown)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from registry.shutdown import bounded


async def _serve_and_stop(app: web.Application) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await asyncio.wait_for(runner.cleanup(), 10)


async def test_a_context_that_never_finishes_is_cut_off_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    async def hangs_on_close(app: web.Application) -> AsyncIterator[None]:
        yield
        await asyncio.Event().wait()  # e.g. a close waiting on a peer that never answers

    async def closes(app: web.Application) -> AsyncIterator[None]:
        yield
        closed.append("closes")

    app = web.Application()
    app.cleanup_ctx.append(bounded(closes))  # cleaned up last
    app.cleanup_ctx.append(bounded(hangs_on_close, seconds=0.2))
    with caplog.at_level(logging.WARNING, "registry.shutdown"):
        await _serve_and_stop(app)
    assert closed == ["closes"]
    assert "hangs_on_close did not finish within" in caplog.text


async def test_a_context_s_own_timeout_is_not_taken_for_the_bound() -> None:
    async def fails_on_close(app: web.Application) -> AsyncIterator[None]:
        yield
        raise TimeoutError("its own")

    app = web.Application()
    app.cleanup_ctx.append(bounded(fails_on_close, seconds=30))
    with pytest.raises(Exception, match="its own"):
        await _serve_and_stop(app)
