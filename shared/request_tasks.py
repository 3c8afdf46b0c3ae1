"""Each request's handler run inside its connection's task on Python 3.11, not a task of
its own.

aiohttp's ``RequestHandler.start`` runs every request's ``_handle_request`` in a new
asyncio task, for one reason: the request gets a copy of the connection's context
variables, so what it sets (``shared.request_id``'s id) never reaches the next request on
the connection (aiohttp #3406). On Python 3.12 and later it starts that task eagerly (no
loop turn before the handler runs); on 3.11 it calls ``loop.create_task``, and every
request pays a ``Task``, the ``call_soon`` of its first step and the done callback that
wakes the connection's task awaiting it (docs/performance.md, branch ``h-req-12``).

:func:`run_requests_inline` puts a task factory on the serving loop that answers
aiohttp's request coroutines, and only those, with :func:`run_inline`: an awaitable that,
awaited by the connection's task, lets one turn of the loop pass (as the task's first
step would have) and then runs the coroutine step by step in a copy of the context, as
the task would have, without a task or callbacks of its own. Every other coroutine gets
what the loop would have made. What changes for a handler is only which task
``asyncio.current_task()`` names: the connection's, the one ``request.task`` names
already. Cancelling it (a client gone with ``handler_cancellation``, the shutdown's last
step, a timeout a handler entered) reaches the handler at its ``await`` exactly as
through the task aiohttp would have made, and the requests of a connection stay in
order, one after another.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from contextvars import copy_context
from typing import Any

from aiohttp.web_protocol import RequestHandler

# The coroutine start() hands to loop.create_task for each request.
_REQUEST_CODE = RequestHandler._handle_request.__code__


# A loop's task factory: called as (loop, coro) or, when create_task gets one, with
# context= too (typeshed knows only the first form).
_TaskFactory = Callable[..., "asyncio.Future[Any]"]


@types.coroutine
def run_inline(
    coro: Coroutine[Any, Any, Any], context: contextvars.Context
) -> Generator[Any, Any, Any]:
    """``coro`` run by whoever awaits this, each step inside ``context``, as a task would
    run it (a ``Task`` too runs each step of its coroutine in its own context). A
    generator-based coroutine, not an object with ``__await__``: one frame per request."""
    send, throw, run = coro.send, coro.throw, context.run
    # None first: one turn of the loop before the handler runs, as a task's first step
    # waits for. A busy loop then takes its ready connections through in phases (every
    # request read, then every handler run), the same code back to back; run at once
    # instead, handlers cost fewer instructions but more CPU at 32 connections
    # (docs/performance.md, h-req-12). A cancellation in that turn reaches the coroutine
    # before its first line, as through a task.
    step = None
    try:
        while True:
            # What the coroutine yields (a future it waits on, or None for a bare turn)
            # goes to the awaiting task as through ``yield from``, and what the task
            # sends or throws back goes to the coroutine, inside its context.
            thrown: BaseException | None = None
            try:
                value = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation: the handler's to handle
                thrown = exc
            # Thrown outside the except clause, as a task throws it: whatever the handler
            # raises in turn is not chained to it.
            step = run(send, value) if thrown is None else run(throw, thrown)
    except StopIteration as done:
        return done.value


class InlineRequests:
    """A loop's task factory: aiohttp's request coroutines run inline (:func:`run_inline`),
    the rest made by the factory it replaced (``previous``), else as a ``Task``."""

    __slots__ = ("previous",)

    def __init__(self, previous: _TaskFactory | None) -> None:
        self.previous = previous

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        /,
        *,
        context: contextvars.Context | None = None,
    ) -> asyncio.Future[Any]:
        if getattr(coro, "cr_code", None) is _REQUEST_CODE:
            # aiohttp's start() awaits what create_task returns at once and only awaits it.
            run = run_inline(coro, copy_context() if context is None else context)
            return run  # type: ignore[return-value]  # awaited as the task would be
        previous = self.previous
        if previous is not None:
            if context is None:
                return previous(loop, coro)
            return previous(loop, coro, context=context)
        return asyncio.Task(coro, loop=loop, context=context)


@contextmanager
def run_requests_inline(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While the block runs, ``loop`` runs aiohttp's request handlers in their
    connection's task (Python 3.11 only: later versions start that task eagerly). Blocks
    may nest (a service and its debug server share a loop): only the outermost sets the
    factory, and it puts the previous one back only if the factory is still its own."""
    previous = loop.get_task_factory()
    if sys.version_info >= (3, 12) or isinstance(previous, InlineRequests):
        yield
        return
    factory = InlineRequests(previous)
    loop.set_task_factory(factory)  # type: ignore[arg-type]  # see _TaskFactory
    try:
        yield
    finally:
        current: object = loop.get_task_factory()
        if current is factory:
            loop.set_task_factory(previous)
