"""The registry's HTTPS settings (``http.tls``) turned into a server TLS context: from
certificate and key files, or from Let's Encrypt (``http.tls.letsencrypt``)."""

from __future__ import annotations

import ssl
from pathlib import Path

from registry.acme.manager import CertificateManager
from registry.acme.store import CacheFileError, check_writable
from registry.config import RegistryConfig
from shared.tls import (
    DEFAULT_MINIMUM,
    MINIMUM_VERSIONS,
    TLSSetupError,
    restrict_cipher_suites,
    server_context,
)

__all__ = ["TLSSetupError", "letsencrypt_manager", "tls_context", "uses_tls"]


def uses_tls(config: RegistryConfig) -> bool:
    tls = config.http.tls
    return bool(tls.certificate or tls.letsencrypt.cachefile)


def tls_context(config: RegistryConfig) -> ssl.SSLContext | None:
    """The context for ``http.tls.certificate``/``key``, or None (plain HTTP, or Let's
    Encrypt, whose context the manager owns).

    Raises TLSSetupError when the settings cannot serve (see :mod:`shared.tls`).
    """
    tls = config.http.tls
    if tls.letsencrypt.cachefile:
        _check_letsencrypt(config)
        return None
    if not tls.certificate:
        return None
    return server_context(
        tls.certificate,
        tls.key,
        minimum=tls.minimumtls,
        client_cas=tls.clientcas,
        client_auth=tls.clientauth,
        cipher_suites=tls.ciphersuites,
    )


def _check_letsencrypt(config: RegistryConfig) -> None:
    tls = config.http.tls
    if tls.certificate:
        raise TLSSetupError("give either certificate and key or letsencrypt, not both")
    if not tls.letsencrypt.hosts:
        raise TLSSetupError("letsencrypt.hosts must name the host names to order certificates for")
    if tls.clientcas:
        raise TLSSetupError("clientcas is not supported together with letsencrypt")
    try:
        check_writable(Path(tls.letsencrypt.cachefile))
    except CacheFileError as error:
        raise TLSSetupError(str(error)) from None
    # The names are checked on a scratch context: the manager's is built when serving.
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    scratch.minimum_version = MINIMUM_VERSIONS[tls.minimumtls or DEFAULT_MINIMUM]
    restrict_cipher_suites(scratch, tls.ciphersuites)


def letsencrypt_manager(config: RegistryConfig) -> CertificateManager | None:
    """The Let's Encrypt manager when ``http.tls.letsencrypt.cachefile`` is set."""
    settings = config.http.tls.letsencrypt
    if not settings.cachefile:
        return None
    _check_letsencrypt(config)
    try:
        manager = CertificateManager(
            Path(settings.cachefile),
            settings.hosts,
            email=settings.email,
            directory_url=settings.directoryurl,
            minimum_version=MINIMUM_VERSIONS[config.http.tls.minimumtls or DEFAULT_MINIMUM],
        )
    except CacheFileError as error:
        raise TLSSetupError(str(error)) from None
    restrict_cipher_suites(manager.context, config.http.tls.ciphersuites)
    return manager
