"""Running tokenauth: one process, or ``--workers N`` processes on the same port.

Workers bind the address with SO_REUSEPORT and the kernel spreads connections among them
(``shared.workers``, as the registry does). Each builds its own app after the fork: its
own credential cache, bcrypt threads and login buckets. Metrics of every worker add up in
one scrape through prometheus-client's multiprocess directory.

The event loop is uvloop's (libuv, in C): a repeat login is small work on the loop, and
asyncio's own loop and socket transport were about a quarter of its CPU time
(docs/performance.md#token-issuance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Coroutine
from typing import Any

import uvloop

from shared.access_log import AccessLogger
from shared.cpu_affinity import allowed_cpus, bind_worker
from shared.listener import bind_sockets
from shared.log_queue import queued_logging
from shared.metrics import multiprocess_dir, worker_gone, worker_samples
from shared.serving import ConnectionTimeouts, serving
from shared.tls import server_context
from shared.workers import supervise
from tokenauth.app import create_app, create_debug_app
from tokenauth.config import TokenAuthConfig, split_address
from tokenauth.errors import INVALID_REQUEST

log = logging.getLogger("tokenauth")


def bind(config: TokenAuthConfig, *, reuse_port: bool = False) -> list[list[socket.socket]]:
    """The sockets of ``http.addr`` and of ``http.debug.addr`` (none when unset);
    raises ListenError naming the address."""
    sockets = bind_sockets(*split_address(config.http.addr), reuse_port=reuse_port)
    debug = config.http.debug.addr
    debug_sockets = bind_sockets(*split_address(debug), reuse_port=reuse_port) if debug else []
    return [sockets, debug_sockets]


def serve(config: TokenAuthConfig, workers: int = 1, *, cpu_affinity: bool = False) -> None:
    """Serve until SIGINT/SIGTERM, in this process or in ``workers`` forked ones; with
    ``cpu_affinity``, each bound to one CPU (``shared.cpu_affinity``)."""
    cpus = allowed_cpus() if cpu_affinity else None
    if workers <= 1:
        if cpus:
            bind_worker(0, cpus)
        sockets, debug_sockets = bind(config)
        with queued_logging():  # lines are written by a thread, all of them before exit
            run(_serve(config, sockets, debug_sockets))
        return
    reservation = bind(config, reuse_port=True)  # held while workers come and go
    metrics = config.http.debug.prometheus.enabled and bool(config.http.debug.addr)
    try:
        with worker_samples(metrics) as samples:

            def run_worker(index: int) -> None:
                sockets, debug_sockets = bind(config, reuse_port=True)
                with queued_logging():  # the worker's own writer thread, after its fork
                    run(_serve(config, sockets, debug_sockets))

            supervise(
                workers,
                run_worker,
                name="tokenauth",
                on_exit=lambda pid: worker_gone(samples, pid),
                cpus=cpus,
            )
    finally:
        for sock in reservation[0] + reservation[1]:
            sock.close()


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, on uvloop's event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _serve(
    config: TokenAuthConfig, sockets: list[socket.socket], debug_sockets: list[socket.socket]
) -> None:
    """Serve on the bound ``sockets`` until SIGINT or SIGTERM; the debug app (metrics) on
    ``debug_sockets`` when ``http.debug.addr`` is set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(config)
    tls = config.http.tls
    context = (
        server_context(tls.certificate, tls.key, minimum=tls.minimumtls, client_cas=tls.clientcas)
        if tls.certificate
        else None
    )
    timeouts = ConnectionTimeouts(
        read_header=config.http.readheadertimeout.total_seconds(),
        idle=config.http.idletimeout.total_seconds(),
        body=config.http.bodytimeout.total_seconds(),
    )
    access_log = None if config.log.accesslog.disabled else logging.getLogger("tokenauth.access")
    async with (
        serving(
            app,
            sockets,
            timeouts=timeouts,
            error_code=INVALID_REQUEST,
            ssl_context=context,
            access_log=access_log,
            access_log_class=AccessLogger,
        ),
        contextlib.AsyncExitStack() as debug,
    ):
        if debug_sockets:
            await debug.enter_async_context(
                serving(
                    create_debug_app(app, multiprocess=multiprocess_dir() is not None),
                    debug_sockets,
                    timeouts=timeouts,
                    error_code=INVALID_REQUEST,
                    shutdown_timeout=1.0,
                    access_log=None,  # a scrape every few seconds would drown the log
                )
            )
            log.info("tokenauth debug server listening on http://%s", config.http.debug.addr)
        scheme = "https" if context else "http"
        event_loop = type(loop).__module__.partition(".")[0]  # uvloop, or asyncio
        log.info("tokenauth listening on %s (%s, %s)", config.http.addr, scheme, event_loop)
        await stop.wait()
