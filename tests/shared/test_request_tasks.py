"""Request handlers run in their connection's task (shared.request_tasks), over a real
server: what a task of their own gave them (a context of their own, cancellation, order,
a graceful shutdown) they still have."""

from __future__ import annotations

import asyncio
import contextvars
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from shared import errors
from shared.listener import bind_sockets
from shared.serving import ConnectionTimeouts, serving

TIMEOUTS = ConnectionTimeouts(read_header=5.0, idle=5.0)
SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

only_311 = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="aiohttp starts request tasks eagerly on 3.12+"
)


@asynccontextmanager
async def served(app: web.Application, **options: Any) -> AsyncIterator[int]:
    sockets = bind_sockets("127.0.0.1", 0)
    port: int = sockets[0].getsockname()[1]
    async with serving(
        app,
        sockets,
        timeouts=TIMEOUTS,
        error_code=errors.UNSUPPORTED,
        shutdown_timeout=5.0,
        **options,
    ):
        yield port


def app_with(**routes: Handler) -> web.Application:
    app = web.Application()
    for name, handler in routes.items():
        app.router.add_get(f"/{name}", handler)
    return app


def request(path: str, *, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET /" + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + connection + b"\r\n"


def bodies(answer: bytes) -> list[bytes]:
    """The bodies of the responses in ``answer``, in order (each has a Content-Length)."""
    found = []
    rest = answer
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        found.append(rest[:length])
        rest = rest[length:]
    return found


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


@only_311
async def test_a_handler_runs_in_its_connections_task() -> None:
    """No task per request on 3.11: the handler's task is the one aiohttp gives the
    request as its own (the connection's); other tasks are made as before, by the loop's
    own factory if it had one, which is put back afterwards."""
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def recording(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def where(request: web.Request) -> web.Response:
        await loop.create_task(asyncio.sleep(0), name="by the handler")
        same = asyncio.current_task() is request.task
        return web.Response(text=str(same))

    loop.set_task_factory(recording)  # type: ignore[arg-type]  # typeshed's lacks **kwargs
    try:
        async with served(app_with(where=where)) as port:
            answer = await exchange(port, request("where") + request("where", close=True))
        assert loop.get_task_factory() is recording
    finally:
        loop.set_task_factory(None)
    assert bodies(answer) == [b"True", b"True"]
    names = [task.get_name() for task in made if isinstance(task, asyncio.Task)]
    assert names.count("by the handler") == 2, names


@only_311
async def test_nested_serving_blocks_share_one_factory() -> None:
    """A service and its debug server serve on one loop: the inner block adds no second
    factory in front of the first, and leaving both puts the loop's own back."""
    loop = asyncio.get_running_loop()

    async def where(request: web.Request) -> web.Response:
        return web.Response(text=str(asyncio.current_task() is request.task))

    async with served(app_with(where=where)) as outer:
        factory = loop.get_task_factory()
        async with served(app_with(where=where)) as inner:
            assert loop.get_task_factory() is factory
            answer = await exchange(inner, request("where", close=True))
        assert loop.get_task_factory() is factory
        answer += await exchange(outer, request("where", close=True))
    assert loop.get_task_factory() is None
    assert bodies(answer) == [b"True", b"True"]


async def test_each_request_has_a_context_of_its_own() -> None:
    """What a request sets in a context variable, before and after it waits, never
    reaches the next request on the connection (aiohttp #3406)."""

    async def remember(request: web.Request) -> web.Response:
        before = SEEN.get()
        SEEN.set("first step")
        await asyncio.sleep(0.01)
        after = SEEN.get()
        SEEN.set("second step")
        return web.Response(text=f"{before},{after}")

    async def quick(request: web.Request) -> web.Response:
        before = SEEN.get()
        SEEN.set("quick")
        return web.Response(text=before)

    async with served(app_with(remember=remember, quick=quick)) as port:
        answer = await exchange(
            port,
            request("quick")
            + request("remember")
            + request("quick")
            + request("remember", close=True),
        )
    assert bodies(answer) == [b"unset", b"unset,first step", b"unset", b"unset,first step"]
    assert SEEN.get() == "unset"


async def test_pipelined_requests_are_answered_in_order() -> None:
    """Requests sent together are answered one after another in their order, a slow one
    (waiting several times) before quick ones, a raised status and an error among them."""

    async def slow(request: web.Request) -> web.Response:
        for _ in range(5):
            await asyncio.sleep(0.01)
        return web.Response(text="slow")

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="quick")

    async def failing(request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        raise RuntimeError("a handler's bug")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="missing")

    app = app_with(slow=slow, quick=quick, failing=failing, missing=missing)
    async with served(app) as port:
        sent = [request(p) for p in ["slow", "quick", "missing", "quick", "slow", "failing"]]
        answer = await exchange(port, b"".join(sent) + request("quick"))
    statuses = re.findall(rb"HTTP/1.1 (\d+)", answer)
    # aiohttp closes the connection after a handler's error: the last request goes unread.
    assert statuses == [b"200", b"200", b"404", b"200", b"200", b"500"], answer
    assert bodies(answer)[:5] == [b"slow", b"quick", b"missing", b"quick", b"slow"]


async def test_a_timeout_inside_a_handler_ends_only_its_wait() -> None:
    """A handler's own timeout, entered before it first waits, cancels the wait it
    bounds and nothing else: the connection goes on to the next request."""

    async def bounded(request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(30)
        except TimeoutError:
            task = asyncio.current_task()
            assert task is not None
            return web.Response(text=f"timed out {task.cancelling()}")
        return web.Response(text="not timed out")

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="quick")

    async with served(app_with(bounded=bounded, quick=quick)) as port:
        answer = await exchange(
            port, request("bounded") + request("bounded") + request("quick", close=True)
        )
    assert bodies(answer) == [b"timed out 0", b"timed out 0", b"quick"]


@pytest.mark.parametrize("cancel", [True, False])
async def test_a_client_gone_mid_request(cancel: bool) -> None:
    """A client that hangs up while its handler waits: with ``handler_cancellation`` the
    handler is cancelled at its wait, without it the handler finishes; either way the
    server serves the next connection."""
    entered = asyncio.Event()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def waiting(request: web.Request) -> web.Response:
        entered.set()
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            outcome.set_result("cancelled")
            raise
        outcome.set_result("finished")
        return web.Response(text="late")

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="quick")

    async with served(app_with(waiting=waiting, quick=quick), handler_cancellation=cancel) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("waiting"))
        await asyncio.wait_for(entered.wait(), 20)
        writer.close()
        await writer.wait_closed()
        assert await asyncio.wait_for(outcome, 20) == ("cancelled" if cancel else "finished")
        assert bodies(await exchange(port, request("quick", close=True))) == [b"quick"]


async def test_a_request_in_progress_finishes_on_shutdown() -> None:
    """Leaving ``serving`` while a handler waits lets it finish and its answer reach
    the client, as aiohttp's graceful shutdown does."""
    entered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(0.2)
        return web.Response(text="finished")

    async with served(app_with(slow=slow)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("slow"))
        await asyncio.wait_for(entered.wait(), 20)
    # The block has shut the server down while the request waited.
    try:
        answer = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and bodies(answer) == [b"finished"], answer
