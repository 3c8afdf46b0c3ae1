"""TLS-ALPN-01 (RFC 8737): the self-signed certificate that proves control of a name.

The ACME server connects to the name on port 443 with SNI set to it and ALPN
``acme-tls/1``; the server must present a certificate for that name only, carrying the
SHA-256 of the key authorization in the critical ``id-pe-acmeIdentifier`` extension.
"""

from __future__ import annotations

import hashlib
import ssl
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

ACME_TLS_1 = "acme-tls/1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def self_signed(
    name: str, lifetime: timedelta, extra: x509.ExtensionType | None = None
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh self-signed certificate for ``name``, with
    ``extra`` as a critical extension when given."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    certificate = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def challenge_certificate(name: str, key_authorization: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) answering the challenge for ``name``."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    # The extension's value is the DER of an OCTET STRING holding the digest.
    value = bytes([0x04, len(digest)]) + digest
    return self_signed(
        name, timedelta(days=1), x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, value)
    )


def context_for(certificate_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context presenting this certificate, speaking only ``acme-tls/1``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_1])
    load_pem_pair(context, certificate_pem, key_pem)
    return context


def load_pem_pair(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` from memory: ssl reads only files, so through a private
    temporary directory that is removed at once."""
    with tempfile.TemporaryDirectory(prefix="portside-tls-") as directory:
        chain, key = Path(directory) / "chain.pem", Path(directory) / "key.pem"
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        chain.write_bytes(chain_pem)
        context.load_cert_chain(str(chain), str(key))
