"""Serve a Let's Encrypt certificate: order it when missing, renew it before it expires.

The manager owns the listener's SSLContext. At start it serves the certificate from
``cachefile`` if it still covers ``hosts``, else a temporary self-signed one; its
``maintain`` task orders a certificate whenever the current one is missing, covers other
names, or expires within ``RENEW_BEFORE`` (Let's Encrypt's own advice: renew at two
thirds of a 90-day lifetime), swaps it into the live context (new connections get it)
and writes the cache. A failed order is retried with backoff while the old certificate
keeps serving.

While an order is pending, a TLS connection whose SNI names a host being validated gets
the TLS-ALPN-01 challenge certificate instead (through the context's SNI callback): that
window lasts the seconds of one validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from registry.acme import issuer, store
from registry.acme.tlsalpn import context_for, load_pem_pair, self_signed

log = logging.getLogger("registry.acme")

LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
RENEW_BEFORE = timedelta(days=30)
CHECK_EVERY = timedelta(hours=12)
RETRY_FIRST, RETRY_MAX = 10.0, 3600.0


class CertificateManager:
    def __init__(
        self,
        cachefile: Path,
        hosts: list[str],
        *,
        email: str = "",
        directory_url: str = "",
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    ) -> None:
        self.cachefile, self.hosts, self.email = cachefile, list(hosts), email
        self.directory_url = directory_url or LETS_ENCRYPT_DIRECTORY
        self.state = store.load(cachefile)
        self._challenges: dict[str, ssl.SSLContext] = {}
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = minimum_version
        self.context.sni_callback = self._select_context
        if self.state.chain and self.state.names() == set(self.hosts):
            load_pem_pair(self.context, self.state.chain, self.state.key)
        else:
            load_pem_pair(self.context, *_placeholder(self.hosts[0]))

    def due(self, now: datetime | None = None) -> bool:
        """Whether the certificate must be (re)ordered now."""
        expires = self.state.expires()
        if expires is None or self.state.names() != set(self.hosts):
            return True
        return expires - (now or datetime.now(UTC)) < RENEW_BEFORE

    def _select_context(
        self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        challenge = self._challenges.get(server_name or "")
        if challenge is not None:
            connection.context = challenge

    def _respond(self, name: str, pair: tuple[bytes, bytes] | None) -> None:
        # Called from the ordering thread; a dict assignment is atomic under the GIL.
        if pair is None:
            self._challenges.pop(name, None)
        else:
            self._challenges[name] = context_for(*pair)

    async def renew(self) -> None:
        """Order a certificate now (in a thread), serve it and cache it."""
        state = await asyncio.to_thread(
            issuer.obtain, self.directory_url, self.email, self.hosts, self.state, self._respond
        )
        # Loaded on the event loop's thread, between handshakes.
        load_pem_pair(self.context, state.chain, state.key)
        self.state = state
        await asyncio.to_thread(store.save, self.cachefile, state)
        log.info("serving the new certificate, valid until %s", state.expires())

    async def maintain(self, stop: asyncio.Event) -> None:
        """Until ``stop``: renew whenever due, retrying failures with backoff."""
        retry = RETRY_FIRST
        while not stop.is_set():
            wait = CHECK_EVERY.total_seconds()
            if self.due():
                try:
                    await self.renew()
                    retry = RETRY_FIRST
                except (issuer.ACMEError, store.CacheFileError, OSError, ssl.SSLError) as error:
                    log.error("Let's Encrypt: %s; retrying in %.0fs", error, retry)
                    wait, retry = retry, min(retry * 2, RETRY_MAX)
                except Exception:
                    # Whatever went wrong, the loop must live on: the certificate expires.
                    log.exception("Let's Encrypt: unexpected failure; retrying in %.0fs", retry)
                    wait, retry = retry, min(retry * 2, RETRY_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


def _placeholder(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate to serve until the first order completes."""
    return self_signed(name, timedelta(days=7))
