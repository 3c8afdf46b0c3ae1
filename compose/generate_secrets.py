"""Generate everything secret a compose deployment of portside needs, into one directory.

Run inside portside's image (``compose/generate-secrets`` does), so it needs nothing on the
host but Docker. Writes, and never overwrites (delete a file to make it again):

- ``ca.crt``/``ca.key``: a private CA, and ``domain.crt``/``domain.key``: a TLS certificate
  it issued for the ``--host`` names (clients trust ``ca.crt``). With a certificate from a
  public CA, put its bundle (leaf, then intermediates) in ``domain.crt`` instead.
- ``token.key``/``token.crt``: tokenauth's signing key; the registry trusts the certificate.
- ``htpasswd`` and ``<user>-password``: a user with a random password.
- ``registry.env``: ``REGISTRY_HTTP_SECRET``, the same for every registry instance.
- ``s3.env`` and ``registry-s3.env``: the S3 user of the scale-out file's RADOS Gateway,
  for the gateway and for the registry.

Private files are mode 0600 and, when run as root, owned by the image's uid 1000.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.htpasswd import format_htpasswd_line
from tokenauth.keygen import write_key_pair

IMAGE_UID = 1000
CERTIFICATE_DAYS = 825


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _tls(out: Path, hosts: list[str]) -> None:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portside compose CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(out / "ca.key", _key_pem(ca_key), private=True)
    _write(out / "ca.crt", ca.public_bytes(pem), private=False)
    _write(out / "domain.key", _key_pem(key), private=True)
    _write(out / "domain.crt", leaf.public_bytes(pem), private=False)


def _token(out: Path) -> None:
    write_key_pair(out / "token.key", out / "token.crt")
    for name in ("token.key", "token.crt"):
        if os.geteuid() == 0:
            os.chown(out / name, IMAGE_UID, IMAGE_UID)


def _user(out: Path, user: str) -> None:
    password = secrets.token_urlsafe(18)
    _write(out / "htpasswd", (format_htpasswd_line(user, password) + "\n").encode(), private=True)
    _write(out / f"{user}-password", (password + "\n").encode(), private=True)


def _env_files(out: Path) -> None:
    _write(
        out / "registry.env",
        f"REGISTRY_HTTP_SECRET={secrets.token_urlsafe(32)}\n".encode(),
        private=True,
    )
    access, secret = "portside", secrets.token_urlsafe(24)
    _write(
        out / "s3.env",
        f"S3_ACCESS_KEY={access}\nS3_SECRET_KEY={secret}\n".encode(),
        private=True,
    )
    _write(
        out / "registry-s3.env",
        f"REGISTRY_STORAGE_S3_ACCESSKEY={access}\nREGISTRY_STORAGE_S3_SECRETKEY={secret}\n".encode(),
        private=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the secrets directory")
    parser.add_argument("--host", action="append", required=True, help="a name of the server")
    parser.add_argument("--user", default="admin", help="the first user (default admin)")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("domain.crt", lambda: _tls(out, args.host)),
        ("token.key", lambda: _token(out)),
        ("htpasswd", lambda: _user(out, args.user)),
        ("registry.env", lambda: _env_files(out)),
    ]
    for marker, step in steps:
        if (out / marker).exists():
            print(f"{marker} exists: kept", file=sys.stderr)
            continue
        step()
        print(f"wrote {marker} and its companions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
