"""Run the registry app on its configured address until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl

from aiohttp import web

from registry.app import create_app
from registry.config import RegistryConfig, listen_host_port

log = logging.getLogger("registry")


def tls_context(config: RegistryConfig) -> ssl.SSLContext | None:
    tls = config.http.tls
    if not tls.certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # The certificate file may be a bundle: leaf first, then intermediates.
    context.load_cert_chain(tls.certificate, tls.key or None)
    return context


def plaintext_credentials_exposed(config: RegistryConfig, host: str) -> bool:
    """Whether credentials would travel in clear text to a non-loopback address."""
    if config.auth.method_name is None or config.http.tls.certificate:
        return False
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "" (every interface) or a host name


async def run(config: RegistryConfig, stop: asyncio.Event) -> None:
    app = create_app(config)
    runner = web.AppRunner(
        app,
        access_log=None if config.log.accesslog.disabled else logging.getLogger("registry.access"),
        shutdown_timeout=config.http.draintimeout.total_seconds() or 5.0,
    )
    await runner.setup()
    host, port = listen_host_port(config.http.addr)
    site = web.TCPSite(runner, host or None, port, ssl_context=tls_context(config))
    await site.start()
    scheme = "https" if config.http.tls.certificate else "http"
    log.info("listening on %s://%s:%d", scheme, host or "*", port)
    if plaintext_credentials_exposed(config, host):
        log.warning(
            "auth.%s is on but the registry listens on %s without TLS: passwords and tokens "
            "would cross the network in clear text; configure http.tls or listen on loopback",
            config.auth.method_name,
            host or "every interface",
        )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: RegistryConfig) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run(config, stop)

    asyncio.run(main())
