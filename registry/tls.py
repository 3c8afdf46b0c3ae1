"""The registry's HTTPS settings (``http.tls``) turned into a server TLS context."""

from __future__ import annotations

import ssl

from registry.config import RegistryConfig
from shared.tls import TLSSetupError, server_context

__all__ = ["TLSSetupError", "tls_context"]


def tls_context(config: RegistryConfig) -> ssl.SSLContext | None:
    """The context for ``http.tls.certificate``/``key``, or None to serve plain HTTP.

    Raises TLSSetupError when the files cannot serve (see :mod:`shared.tls`).
    """
    tls = config.http.tls
    if not tls.certificate:
        return None
    return server_context(
        tls.certificate,
        tls.key,
        minimum=tls.minimumtls,
        client_cas=tls.clientcas,
        client_auth=tls.clientauth,
    )
