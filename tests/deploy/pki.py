"""A throw-away certificate authority for the TLS tests: root → intermediate → leaf.

The leaf names ``localhost`` and ``127.0.0.1``; :meth:`Pki.write_bundle` writes it the way
the deployment guide builds ``domain.crt`` (leaf, then the intermediate), so a client that
trusts only the root can verify the chain the server sends.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    key: Key
    certificate: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    common_name: str,
    issuer: Issued | None,
    *,
    ca: bool,
    server: bool = False,
    client: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """A certificate for a new P-256 key, signed by ``issuer`` (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    return Issued(key, builder.sign(signer_key, hashes.SHA256()))


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Pki:
    root: Issued
    intermediate: Issued
    leaf: Issued

    @classmethod
    def create(cls, *, leaf_not_after: datetime | None = None) -> Pki:
        root = issue("portside test root CA", None, ca=True)
        intermediate = issue("portside test intermediate CA", root, ca=True)
        leaf = issue(
            "localhost",
            intermediate,
            ca=False,
            server=True,
            not_before=leaf_not_after - timedelta(days=2) if leaf_not_after else None,
            not_after=leaf_not_after,
        )
        return cls(root, intermediate, leaf)

    def write_bundle(self, directory: Path) -> tuple[Path, Path]:
        """``domain.crt`` (leaf + intermediate) and ``domain.key`` in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        certificate, key = directory / "domain.crt", directory / "domain.key"
        certificate.write_bytes(pem(self.leaf.certificate) + pem(self.intermediate.certificate))
        key.write_bytes(key_pem(self.leaf.key))
        key.chmod(0o600)
        return certificate, key

    def write_root(self, path: Path) -> Path:
        path.write_bytes(pem(self.root.certificate))
        return path

    def client(self, directory: Path, name: str = "client") -> tuple[Path, Path]:
        """A client certificate issued by the root, and its key."""
        issued = issue(name, self.root, ca=False, client=True)
        certificate, key = directory / f"{name}.crt", directory / f"{name}.key"
        certificate.write_bytes(pem(issued.certificate))
        key.write_bytes(key_pem(issued.key))
        return certificate, key
