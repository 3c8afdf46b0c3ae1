"""Server-side TLS contexts for both services, checked before any socket is opened.

``server_context`` reads a PEM certificate file (the leaf first, then any intermediates:
the ``cat domain.crt intermediate-certificates.pem > domain.crt`` bundle), its key, an
optional minimum protocol version and optional client CAs for mutual TLS. Everything
that would make the listener useless — an unreadable file, an expired or not yet valid
leaf, a key that belongs to another certificate, a client-auth mode Python's TLS cannot
honour — raises :class:`TLSSetupError` with a message meant for the operator.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared import keyfiles
from shared.ciphersuites import CipherSuiteError, apply_cipher_suites

# Distribution's names for the minimum protocol version; Go's default (and Distribution's)
# is TLS 1.2, and so is ours when none is configured.
MINIMUM_VERSIONS = {
    "tls1.0": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_MINIMUM = "tls1.2"

# Client-auth modes (Distribution's http.tls.clientauth) Python's ssl module can honour.
# Go's "request-client-cert" and "require-any-client-cert" accept a certificate nobody
# verified; OpenSSL through Python always verifies a presented certificate, so those two
# are refused rather than silently made stricter or looser.
CLIENT_AUTH_MODES = {
    "verify-client-cert-if-given": ssl.CERT_OPTIONAL,
    "require-and-verify-client-cert": ssl.CERT_REQUIRED,
}


class TLSSetupError(Exception):
    """The TLS settings cannot serve; the message says which file and why."""


def read_certificates(path: str) -> list[x509.Certificate]:
    """The PEM certificates in ``path``, in file order (leaf first in a bundle)."""
    try:
        return keyfiles.read_certificates(path)
    except keyfiles.KeyFileError as error:
        raise TLSSetupError(str(error)) from None


def check_validity(certificate: x509.Certificate, path: str, now: datetime | None = None) -> None:
    """Refuse a leaf certificate outside its validity period."""
    now = now or datetime.now(UTC)
    if certificate.not_valid_after_utc <= now:
        raise TLSSetupError(
            f"the certificate in {path} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; renew it"
        )
    if certificate.not_valid_before_utc > now:
        raise TLSSetupError(
            f"the certificate in {path} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )


def check_key_matches(certificate: x509.Certificate, key_path: str, cert_path: str) -> None:
    """Refuse a private key that does not belong to the leaf (the bundle's first entry)."""
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as error:
        raise TLSSetupError(f"cannot read key file {key_path}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise TLSSetupError(
            f"{key_path} holds no unencrypted PEM private key (encrypted keys are not supported)"
        ) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(der, spki):
        raise TLSSetupError(
            f"the key in {key_path} does not match the certificate in {cert_path} "
            "(the first certificate of a bundle must be the server's own)"
        )


def server_context(
    certificate: str,
    key: str,
    *,
    minimum: str = "",
    client_cas: Sequence[str] = (),
    client_auth: str = "",
    cipher_suites: Sequence[str] = (),
) -> ssl.SSLContext:
    """A server context for ``certificate`` (leaf + intermediates) and ``key``.

    With ``client_cas``, clients must present a certificate issued by one of them
    (``client_auth`` may relax that to "verify-client-cert-if-given"). ``cipher_suites``
    are Distribution's names (see :mod:`shared.ciphersuites`).
    """
    chain = read_certificates(certificate)
    check_validity(chain[0], certificate)
    check_key_matches(chain[0], key, certificate)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = MINIMUM_VERSIONS.get(minimum or DEFAULT_MINIMUM)
    if version is None:
        raise TLSSetupError(f"unknown minimum TLS version {minimum!r}")
    context.minimum_version = version
    restrict_cipher_suites(context, cipher_suites)
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as error:
        raise TLSSetupError(f"cannot use {certificate} with {key}: {error.reason}") from None
    _client_verification(context, client_cas, client_auth)
    return context


def restrict_cipher_suites(context: ssl.SSLContext, names: Sequence[str]) -> None:
    """Apply ``ciphersuites`` to a context whose minimum version is already set."""
    try:
        apply_cipher_suites(context, names)
    except CipherSuiteError as error:
        raise TLSSetupError(f"ciphersuites: {error}") from None


def _client_verification(
    context: ssl.SSLContext, client_cas: Sequence[str], client_auth: str
) -> None:
    if not client_cas:
        if client_auth:
            raise TLSSetupError(f"clientauth {client_auth!r} needs clientcas to verify against")
        return
    mode = CLIENT_AUTH_MODES.get(client_auth or "require-and-verify-client-cert")
    if mode is None:
        raise TLSSetupError(
            f"clientauth {client_auth!r} is not supported: Python's TLS always verifies a "
            f"client certificate; use one of {', '.join(CLIENT_AUTH_MODES)}"
        )
    for path in client_cas:
        read_certificates(path)  # a clear message for a missing or empty file
        try:
            context.load_verify_locations(cafile=path)
        except ssl.SSLError as error:
            raise TLSSetupError(f"cannot load client CA file {path}: {error.reason}") from None
    context.verify_mode = mode
