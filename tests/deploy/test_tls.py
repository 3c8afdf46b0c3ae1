"""HTTPS for the registry and tokenauth: bundles, minimum version, mutual TLS, and the
start-up refusals of certificates that cannot serve.

Every server runs as an operator runs it (``python -m registry serve CONFIG``) with a
real CA chain made for the test: root → intermediate → leaf for localhost/127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.deploy.https import HTTPSServerProcess, client_context, https_get, run_to_exit
from tests.deploy.pki import Pki, issue, key_pem, pem
from tests.support.portside_servers import free_port, run_python_module


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


def registry_config(directory: Path, port: int, tls: dict[str, Any]) -> Path:
    path = directory / "registry.yml"
    path.write_text(
        json.dumps(
            {
                "version": "0.1",
                "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
                "http": {"addr": f"127.0.0.1:{port}", "tls": tls},
            }
        )
    )
    return path


@pytest.fixture
def start_registry(tmp_path: Path, pki: Pki) -> Iterator[Any]:
    started: list[HTTPSServerProcess] = []

    def start(tls: dict[str, Any], context: ssl.SSLContext) -> HTTPSServerProcess:
        port = free_port()
        config = registry_config(tmp_path, port, tls)
        server = HTTPSServerProcess(
            "registry",
            ["registry", "serve", str(config)],
            port,
            "/",
            tmp_path / "registry.log",
            context=context,
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def test_bundle_of_leaf_and_intermediate_verifies_against_the_root_alone(
    tmp_path: Path, pki: Pki, start_registry: Any
) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    root = pki.write_root(tmp_path / "root.crt")
    context = client_context(root)
    registry = start_registry({"certificate": str(certificate), "key": str(key)}, context)
    assert https_get(registry.port, "/v2/", context) == 200
    # What the client verified: the leaf for localhost, issued by the intermediate.
    connection = socket.create_connection(("127.0.0.1", registry.port))
    with context.wrap_socket(connection, server_hostname="localhost") as tls:
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    assert peer == pki.leaf.certificate
    assert peer.issuer == pki.intermediate.certificate.subject


def test_leaf_without_its_intermediate_does_not_verify(
    tmp_path: Path, pki: Pki, start_registry: Any
) -> None:
    """The control: without the bundle's intermediate, a root-only client must refuse."""
    (tmp_path / "leaf.crt").write_bytes(pem(pki.leaf.certificate))
    (tmp_path / "leaf.key").write_bytes(key_pem(pki.leaf.key))
    root = client_context(pki.write_root(tmp_path / "root.crt"))
    trusting_intermediate = client_context(tmp_path / "root.crt")
    trusting_intermediate.load_verify_locations(cadata=pem(pki.intermediate.certificate).decode())
    registry = start_registry(
        {"certificate": str(tmp_path / "leaf.crt"), "key": str(tmp_path / "leaf.key")},
        trusting_intermediate,
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(registry.port, "/v2/", root)


def test_minimumtls_refuses_older_clients(tmp_path: Path, pki: Pki, start_registry: Any) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    context = client_context(pki.write_root(tmp_path / "root.crt"))
    registry = start_registry(
        {"certificate": str(certificate), "key": str(key), "minimumtls": "tls1.3"}, context
    )
    old = client_context(tmp_path / "root.crt")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        https_get(registry.port, "/v2/", old)
    assert https_get(registry.port, "/v2/", context) == 200


def test_clientcas_require_a_client_certificate(
    tmp_path: Path, pki: Pki, start_registry: Any
) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    root = pki.write_root(tmp_path / "root.crt")
    client_certificate, client_key = pki.client(tmp_path)
    with_certificate = client_context(root, certificate=client_certificate, key=client_key)
    registry = start_registry(
        {"certificate": str(certificate), "key": str(key), "clientcas": [str(root)]},
        with_certificate,
    )
    assert https_get(registry.port, "/v2/", with_certificate) == 200
    # TLS 1.3 reports the refusal after the handshake, on the first read.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https_get(registry.port, "/v2/", client_context(root))
    # A certificate from another CA is no better than none.
    stranger = Pki.create()
    other_certificate, other_key = stranger.client(tmp_path, "stranger")
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https_get(
            registry.port,
            "/v2/",
            client_context(root, certificate=other_certificate, key=other_key),
        )


def refused(tmp_path: Path, certificate: Path, key: Path, **tls: Any) -> str:
    config = registry_config(
        tmp_path, free_port(), {"certificate": str(certificate), "key": str(key), **tls}
    )
    completed = run_to_exit("registry", "serve", str(config))
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    return completed.stderr


def test_expired_certificate_is_refused_at_start_up(tmp_path: Path) -> None:
    expired = Pki.create(leaf_not_after=datetime.now(UTC) - timedelta(days=1))
    certificate, key = expired.write_bundle(tmp_path / "certs")
    message = refused(tmp_path, certificate, key)
    assert "http.tls" in message and "expired on" in message and str(certificate) in message


def test_key_of_another_certificate_is_refused_at_start_up(tmp_path: Path, pki: Pki) -> None:
    certificate, _ = pki.write_bundle(tmp_path / "certs")
    other = issue("other", None, ca=False, server=True)
    (tmp_path / "other.key").write_bytes(key_pem(other.key))
    message = refused(tmp_path, certificate, tmp_path / "other.key")
    assert "does not match the certificate" in message


def test_missing_file_and_unsupported_clientauth_are_refused(tmp_path: Path, pki: Pki) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    assert "cannot read" in refused(tmp_path, tmp_path / "nothing.crt", key)
    root = pki.write_root(tmp_path / "root.crt")
    message = refused(
        tmp_path, certificate, key, clientcas=[str(root)], clientauth="require-any-client-cert"
    )
    assert "not supported" in message


def tokenauth_config(directory: Path, port: int, certificate: Path, key: Path, **tls: Any) -> Path:
    run_python_module(
        "tokenauth",
        "keygen",
        "--key",
        str(directory / "token.key"),
        "--certificate",
        str(directory / "token.crt"),
    )
    (directory / "users.htpasswd").write_text("")
    (directory / "acl.yml").write_text("acl: []\n")
    path = directory / "tokenauth.yml"
    path.write_text(
        json.dumps(
            {
                "http": {
                    "addr": f"127.0.0.1:{port}",
                    "tls": {"certificate": str(certificate), "key": str(key), **tls},
                },
                "token": {
                    "issuer": "test",
                    "services": ["test"],
                    "key": "token.key",
                    "certificate": "token.crt",
                },
                "users": ["users.htpasswd"],
                "acl": "acl.yml",
            }
        )
    )
    return path


def test_tokenauth_serves_the_bundle_and_refuses_an_expired_one(tmp_path: Path, pki: Pki) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    context = client_context(pki.write_root(tmp_path / "root.crt"))
    port = free_port()
    config = tokenauth_config(tmp_path, port, certificate, key)
    server = HTTPSServerProcess(
        "tokenauth",
        ["tokenauth", "serve", str(config)],
        port,
        "/health",
        tmp_path / "tokenauth.log",
        context=context,
    )
    server.start()
    try:
        assert https_get(port, "/health", context) == 200
    finally:
        server.stop()
    expired = Pki.create(leaf_not_after=datetime.now(UTC) - timedelta(hours=1))
    expired.write_bundle(tmp_path / "certs")  # same paths, now an expired leaf
    completed = run_to_exit("tokenauth", "serve", str(config))
    assert completed.returncode == 2, completed.stderr
    assert "expired on" in completed.stderr and "Traceback" not in completed.stderr


def test_tokenauth_minimumtls_and_clientcas(tmp_path: Path, pki: Pki) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    root = pki.write_root(tmp_path / "root.crt")
    client_certificate, client_key = pki.client(tmp_path)
    with_certificate = client_context(root, certificate=client_certificate, key=client_key)
    port = free_port()
    config = tokenauth_config(
        tmp_path, port, certificate, key, minimumtls="tls1.3", clientcas=[str(root)]
    )
    server = HTTPSServerProcess(
        "tokenauth",
        ["tokenauth", "serve", str(config)],
        port,
        "/health",
        tmp_path / "tokenauth.log",
        context=with_certificate,
    )
    server.start()
    try:
        assert https_get(port, "/health", with_certificate) == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            https_get(port, "/health", client_context(root))  # no client certificate
        old = client_context(root, certificate=client_certificate, key=client_key)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            https_get(port, "/health", old)
    finally:
        server.stop()


def test_ciphersuites_restrict_tls12_suites(tmp_path: Path, pki: Pki, start_registry: Any) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    root = pki.write_root(tmp_path / "root.crt")
    context = client_context(root)
    registry = start_registry(
        {
            "certificate": str(certificate),
            "key": str(key),
            "ciphersuites": [
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_GCM_SHA256",  # TLS 1.3: accepted, always on (as in Go)
            ],
        },
        context,
    )
    tls12 = client_context(root)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    connection = socket.create_connection(("127.0.0.1", registry.port))
    with tls12.wrap_socket(connection, server_hostname="localhost") as tls:
        cipher = tls.cipher()
        assert cipher is not None and cipher[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    # A TLS 1.2 client offering only other suites (Python's default offers this one too).
    tls12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        https_get(registry.port, "/v2/", tls12)
    assert https_get(registry.port, "/v2/", context) == 200  # TLS 1.3 is unaffected


@pytest.mark.parametrize(
    ("suites", "message"),
    [
        (["TLS_ECDHE_ECDSA_WITH_AES_128_GCM"], "http.tls.ciphersuites: item 0 is not"),
        (["TLS_AES_128_GCM_SHA256"], "ciphersuites: names only TLS 1.3 suites"),
        (["TLS_RSA_WITH_RC4_128_SHA"], "not available in this OpenSSL: TLS_RSA_WITH_RC4_128_SHA"),
        (
            ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA"],
            "TLS_RSA_WITH_RC4_128_SHA is not available in this OpenSSL",
        ),
    ],
)
def test_unusable_ciphersuites_are_refused_at_start_up(
    tmp_path: Path, pki: Pki, suites: list[str], message: str
) -> None:
    certificate, key = pki.write_bundle(tmp_path / "certs")
    assert message in refused(tmp_path, certificate, key, ciphersuites=suites)
