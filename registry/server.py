"""Run the registry app on its configured address until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket

from registry.app import create_app
from registry.auth.base import AccessController
from registry.config import RegistryConfig, listen_host_port
from registry.debug_server import bind_debug, create_debug_app, debug_address
from registry.handlers.sendfile import grow_send_buffer
from registry.metrics_serving import metrics_served
from registry.middleware import BAD_REQUEST
from registry.notifications.notifier import WorkerSlot
from registry.tls import letsencrypt_manager, tls_context, uses_tls
from shared.access_log import AccessLogger
from shared.cpu_affinity import allowed_cpus, bind_worker
from shared.listener import bind_sockets, bind_unix, display_address
from shared.log_queue import queued_logging
from shared.metrics import worker_gone, worker_samples
from shared.serving import ConnectionTimeouts, serving
from shared.workers import supervise

log = logging.getLogger("registry")


def plaintext_credentials_exposed(config: RegistryConfig, host: str) -> bool:
    """Whether credentials would travel in clear text to a non-loopback address."""
    if config.auth.method_name is None or uses_tls(config):
        return False
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "" (every interface) or a host name


def connection_timeouts(config: RegistryConfig) -> ConnectionTimeouts:
    return ConnectionTimeouts(
        read_header=config.http.readheadertimeout.total_seconds(),
        idle=config.http.idletimeout.total_seconds(),
        body=config.http.bodytimeout.total_seconds(),
    )


def bind(config: RegistryConfig, *, reuse_port: bool = False) -> list[socket.socket]:
    """The sockets for ``http.addr``; raises ListenError (one line naming the address)."""
    if config.http.net == "unix":
        return [bind_unix(config.http.addr)]
    host, port = listen_host_port(config.http.addr)
    return bind_sockets(host, port, reuse_port=reuse_port)


def listen_address(config: RegistryConfig) -> str:
    """``http.addr`` as log lines show it: ``host:port`` (``*`` for every interface) or
    ``unix:PATH``."""
    if config.http.net == "unix":
        return f"unix:{config.http.addr}"
    return display_address(*listen_host_port(config.http.addr))


async def run(
    config: RegistryConfig,
    stop: asyncio.Event,
    sockets: list[socket.socket],
    *,
    maintenance: bool = True,
    controller: AccessController | None = None,
    debug_sockets: list[socket.socket] | None = None,
    worker: WorkerSlot | None = None,
) -> None:
    """Serve on the bound ``sockets`` until ``stop`` is set (``controller``, ``worker``: see
    create_app); the debug app on ``debug_sockets`` when given (``http.debug.addr``)."""
    app = create_app(config, maintenance=maintenance, controller=controller, worker=worker)
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            grow_send_buffer(sock)  # inherited by every connection (see grow_send_buffer)
    letsencrypt = letsencrypt_manager(config)
    ssl_context = letsencrypt.context if letsencrypt else tls_context(config)
    async with (
        serving(
            app,
            sockets,
            timeouts=connection_timeouts(config),
            error_code=BAD_REQUEST,
            ssl_context=ssl_context,
            shutdown_timeout=config.http.draintimeout.total_seconds() or 5.0,
            access_log=None
            if config.log.accesslog.disabled
            else logging.getLogger("registry.access"),
            access_log_class=AccessLogger,
            # Bodies are stored as sent, as Distribution does: a Content-Encoding is the
            # client's business, and decompressing would let a small body grow unbounded.
            auto_decompress=False,
        ),
        contextlib.AsyncExitStack() as debug,
    ):
        if debug_sockets:
            await debug.enter_async_context(
                serving(
                    create_debug_app(config, app),
                    debug_sockets,
                    timeouts=connection_timeouts(config),
                    error_code=BAD_REQUEST,
                    shutdown_timeout=1.0,
                    access_log=None,  # scrapes and probes every few seconds would drown it
                )
            )
            log.info("debug server listening on http://%s", debug_address(config))
        elif config.http.debug.prometheus.enabled and maintenance:
            log.warning(
                "http.debug.prometheus is enabled but no metrics are served: set http.debug.addr"
            )
        # Ordered and renewed while serving: TLS-ALPN-01 is answered on this very listener.
        renewing = asyncio.create_task(letsencrypt.maintain(stop)) if letsencrypt else None
        scheme = "https" if ssl_context else "http"
        log.info("listening on %s://%s (pid %d)", scheme, listen_address(config), os.getpid())
        host = "localhost" if config.http.net == "unix" else listen_host_port(config.http.addr)[0]
        if plaintext_credentials_exposed(config, host) and maintenance:
            log.warning(
                "auth.%s is on but the registry listens on %s without TLS: passwords and tokens "
                "would cross the network in clear text; configure http.tls or listen on loopback",
                config.auth.method_name,
                host or "every interface",
            )
        try:
            await stop.wait()
        finally:
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing


def _serve_one(
    config: RegistryConfig,
    sockets: list[socket.socket],
    *,
    maintenance: bool,
    controller: AccessController | None,
    debug_sockets: list[socket.socket] | None,
    worker: WorkerSlot | None = None,
) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run(
            config,
            stop,
            sockets,
            maintenance=maintenance,
            controller=controller,
            debug_sockets=debug_sockets,
            worker=worker,
        )

    # The standard event loop, not uvloop: uvloop serves ~10% more small requests per
    # second here but has no loop.sendfile, and blob pulls must use sendfile. Log lines are
    # written by a thread of this process (a worker's own, started after its fork), and
    # every one is out before it returns.
    with queued_logging():
        asyncio.run(main())


def serve(
    config: RegistryConfig,
    workers: int = 1,
    controller: AccessController | None = None,
    *,
    cpu_affinity: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM; with several workers, one process each on a shared port.

    Workers bind the same address with SO_REUSEPORT and the kernel spreads connections
    among them. Only the first runs maintenance (upload purging). A worker that dies is
    replaced; a signal to this process stops them all.

    Raises ListenError before serving when the address cannot be bound. With workers,
    this process binds it first (without listening, so it is given no connections) and
    holds it: no other user's process can take the port while a worker is replaced.

    ``controller``, built from ``config`` before (see create_app), serves every worker: each
    gets it as it was before the fork (it starts no thread until its app starts).

    ``cpu_affinity``: each worker (or this process) bound to one CPU (``cpu_affinity``).
    """
    cpus = allowed_cpus() if cpu_affinity else None
    if workers <= 1:
        if cpus:
            bind_worker(0, cpus)
        sockets = bind(config)
        debug_sockets = bind_debug(config) if config.http.debug.addr else None
        try:
            _serve_one(
                config,
                sockets,
                maintenance=True,
                controller=controller,
                debug_sockets=debug_sockets,
            )
        finally:
            if config.http.net == "unix":  # as Go's listener does on close
                with contextlib.suppress(OSError):
                    os.unlink(config.http.addr)
        return
    reservation = bind(config, reuse_port=True)
    if config.http.debug.addr:  # held as the API's address is (see above)
        reservation += bind_debug(config, reuse_port=True)
    try:
        with worker_samples(metrics_served(config)) as samples:
            _supervise(config, workers, controller, samples, cpus)
    finally:
        for sock in reservation:
            sock.close()


def _supervise(
    config: RegistryConfig,
    workers: int,
    controller: AccessController | None,
    samples: str | None,
    cpus: list[int] | None,
) -> None:
    """Fork ``workers`` and replace any that dies; ``samples``: the metrics directory;
    ``cpus``: those to bind the workers to (none: unbound)."""

    def run_worker(index: int) -> None:  # its own event loop, app, caches and threads
        sockets = bind(config, reuse_port=True)
        debug_sockets = bind_debug(config, reuse_port=True) if config.http.debug.addr else None
        _serve_one(
            config,
            sockets,
            maintenance=index == 0,
            controller=controller,
            debug_sockets=debug_sockets,
            worker=WorkerSlot(index, workers),
        )

    supervise(
        workers,
        run_worker,
        name="registry",
        on_exit=lambda pid: worker_gone(samples, pid),
        cpus=cpus,
    )
