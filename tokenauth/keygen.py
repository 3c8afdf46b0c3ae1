"""``tokenauth keygen``: a signing key and the self-signed certificate registries trust.

The certificate goes into a registry's ``auth.token.rootcertbundle``; the token server
puts it in each token's ``x5c`` header, and its key's RFC 7638 thumbprint in ``kid``.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from shared.jose_keys import PrivateKey

ALGORITHMS = ("ES256", "ES384", "RS256")
DEFAULT_RSA_BITS = 3072


def generate_key(algorithm: str = "ES256", rsa_bits: int = DEFAULT_RSA_BITS) -> PrivateKey:
    """A fresh private key for ``algorithm`` (ES256 → P-256, ES384 → P-384, RS256 → RSA)."""
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "RS256":
        if rsa_bits < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise ValueError(f"unsupported algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def self_signed_certificate(
    key: PrivateKey, common_name: str, lifetime: timedelta = timedelta(days=3650)
) -> x509.Certificate:
    """A self-signed certificate for ``key`` that works both as trust anchor and signer.

    It is a CA (so a registry may trust it as a root) with the digitalSignature usage a
    token signer needs. Validity starts an hour back to tolerate clock skew.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    public = key.public_key()
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    # Ed25519 signs without a separate digest; the others sign a SHA-256 digest.
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_key_pair(
    key_path: Path,
    cert_path: Path,
    *,
    algorithm: str = "ES256",
    common_name: str = "portside tokenauth",
    lifetime: timedelta = timedelta(days=3650),
    rsa_bits: int = DEFAULT_RSA_BITS,
    force: bool = False,
) -> x509.Certificate:
    """Write a new key (mode 0600) and its certificate; refuse to overwrite unless ``force``."""
    for path in (key_path, cert_path):
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists; pass --force to replace it")
    key = generate_key(algorithm, rsa_bits)
    cert = self_signed_certificate(key, common_name, lifetime)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(key_path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem(key))
    os.chmod(key_path, 0o600)  # O_CREAT's mode does not apply to an existing file
    cert_path.write_bytes(certificate_pem(cert))
    return cert
