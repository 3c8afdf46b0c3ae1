"""``http.tls.letsencrypt`` against a real ACME server (pebble): the registry orders a
certificate for its host name, answering TLS-ALPN-01 on its own port; serves it (a client
trusting only pebble's root verifies it); keeps it in ``cachefile`` and serves it from
there after a restart with the ACME server gone; renews a cached certificate that is
about to expire.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tests.deploy.https import HTTPSServerProcess, https_get, run_to_exit
from tests.deploy.pebble import Pebble, start_pebble
from tests.deploy.pki import Pki, issue, key_pem, pem
from tests.support.portside_servers import free_port
from tests.support.tools import require_tool

Start = Callable[[], HTTPSServerProcess]


def unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_certificate(port: int) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as connection,
        unverified().wrap_socket(connection, server_hostname="localhost") as tls,
    ):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")


def wait_until(check: Callable[[], bool], what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log()}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[int, Path, list[Pebble], list[HTTPSServerProcess]]]:
    require_tool("pebble")
    port = free_port()
    pebbles: list[Pebble] = []
    registries: list[HTTPSServerProcess] = []
    yield port, tmp_path, pebbles, registries
    for registry in registries:
        registry.stop()
    for pebble in pebbles:
        pebble.stop()


def write_config(directory: Path, port: int, pebble: Pebble) -> Path:
    config = directory / "registry.yml"
    config.write_text(
        json.dumps(
            {
                "version": "0.1",
                "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
                "http": {
                    "addr": f"127.0.0.1:{port}",
                    "tls": {
                        "letsencrypt": {
                            "cachefile": str(directory / "acme" / "cache.json"),
                            "email": "admin@example.com",
                            "hosts": ["localhost"],
                            "directoryurl": pebble.directory_url,
                        }
                    },
                },
            }
        )
    )
    return config


def start_registry(directory: Path, port: int, pebble: Pebble) -> HTTPSServerProcess:
    (directory / "acme").mkdir(exist_ok=True)
    registry = HTTPSServerProcess(
        "registry",
        ["registry", "serve", str(write_config(directory, port, pebble))],
        port,
        "/",
        directory / "registry.log",
        context=unverified(),
        # requests (in the ACME client) must trust pebble's own HTTPS certificate.
        env={"REQUESTS_CA_BUNDLE": str(pebble.trust)},
    )
    registry.start()
    return registry


def issued_by_pebble(port: int, root: bytes, directory: Path) -> bool:
    (directory / "pebble-issuing-root.crt").write_bytes(root)
    context = ssl.create_default_context(cafile=str(directory / "pebble-issuing-root.crt"))
    try:
        return https_get(port, "/v2/", context) == 200
    except ssl.SSLError:
        return False


def test_order_serve_cache_and_restart_without_the_acme_server(
    setup: tuple[int, Path, list[Pebble], list[HTTPSServerProcess]],
) -> None:
    port, directory, pebbles, registries = setup
    pebble = start_pebble(require_tool("pebble"), directory / "pebble", Pki.create(), port)
    pebbles.append(pebble)
    registry = start_registry(directory, port, pebble)
    registries.append(registry)
    root = pebble.issuing_root()
    wait_until(
        lambda: issued_by_pebble(port, root, directory), "pebble's certificate", registry.log
    )
    issued = served_certificate(port)
    assert "obtained a certificate for localhost" in registry.log()
    # Validated for real: pebble connected to the registry and checked the challenge.
    assert "set VALID by completed challenge" in pebble.log_path.read_text()
    cachefile = directory / "acme" / "cache.json"
    assert cachefile.stat().st_mode & 0o077 == 0
    cached = x509.load_pem_x509_certificates(json.loads(cachefile.read_text())["chain"].encode())
    assert cached[0] == issued and len(cached) >= 2  # leaf and pebble's intermediate

    registry.stop()
    pebble.stop()  # the cache alone must do now
    registry = start_registry(directory, port, pebble)
    registries.append(registry)
    assert served_certificate(port) == issued
    assert issued_by_pebble(port, root, directory)


def test_a_cached_certificate_near_expiry_is_renewed(
    setup: tuple[int, Path, list[Pebble], list[HTTPSServerProcess]],
) -> None:
    port, directory, pebbles, registries = setup
    # A cache holding a certificate for localhost that expires in ten days.
    old = Pki.create(leaf_not_after=datetime.now(UTC) + timedelta(days=10))
    (directory / "acme").mkdir(exist_ok=True)
    from registry.acme.store import CachedState, new_private_key_pem, save

    save(
        directory / "acme" / "cache.json",
        CachedState(
            account_key=new_private_key_pem(),
            key=key_pem(old.leaf.key),
            chain=pem(old.leaf.certificate) + pem(old.intermediate.certificate),
        ),
    )
    pebble = start_pebble(require_tool("pebble"), directory / "pebble", Pki.create(), port)
    pebbles.append(pebble)
    registry = start_registry(directory, port, pebble)
    registries.append(registry)
    root = pebble.issuing_root()
    wait_until(lambda: issued_by_pebble(port, root, directory), "the renewal", registry.log)
    renewed = served_certificate(port)
    assert renewed != old.leaf.certificate
    assert renewed.not_valid_after_utc > datetime.now(UTC) + timedelta(days=30)


def test_letsencrypt_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    other = issue("x", None, ca=False, server=True)
    (tmp_path / "x.crt").write_bytes(pem(other.certificate))
    (tmp_path / "x.key").write_bytes(key_pem(other.key))
    cases = [
        ({"letsencrypt": {"cachefile": str(tmp_path / "c.json")}}, "letsencrypt.hosts"),
        (
            {
                "certificate": str(tmp_path / "x.crt"),
                "key": str(tmp_path / "x.key"),
                "letsencrypt": {"cachefile": str(tmp_path / "c.json"), "hosts": ["a"]},
            },
            "not both",
        ),
        (
            {"letsencrypt": {"cachefile": str(tmp_path / "no/such/dir/c.json"), "hosts": ["a"]}},
            "cannot create files",
        ),
    ]
    for tls, message in cases:
        config = tmp_path / "registry.yml"
        config.write_text(
            json.dumps({"version": "0.1", "http": {"addr": "127.0.0.1:0", "tls": tls}})
        )
        completed = run_to_exit("registry", "serve", str(config))
        assert completed.returncode == 2, completed.stderr
        assert message in completed.stderr and "Traceback" not in completed.stderr
