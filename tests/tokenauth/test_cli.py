"""The ``tokenauth`` command as an operator runs it: keygen, check, and serve over HTTPS."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import stat
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from shared.jose_keys import thumbprint
from tests.support.tools import free_port
from tests.tokenauth.conftest import SERVICE, Setup, basic
from tokenauth.__main__ import main
from tokenauth.keygen import certificate_pem, key_pem, self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]


def tokenauth(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command's ``main`` in this process (the serve test starts a real process)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_key_and_trust_anchor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert_file = tmp_path / "token.key", tmp_path / "token.crt"
    files = ["--key", str(key), "--certificate", str(cert_file)]
    code, out, err = tokenauth(capsys, "keygen", *files)
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert thumbprint(cert.public_key()) in out  # type: ignore[arg-type]
    assert "BEGIN PRIVATE KEY" in key.read_text()
    code, _, err = tokenauth(capsys, "keygen", *files)
    assert code == 1 and "exists" in err
    code, _, err = tokenauth(
        capsys,
        "keygen",
        "--algorithm",
        "RS256",
        "--rsa-bits",
        "2048",
        "--key",
        str(tmp_path / "r.key"),
        "--certificate",
        str(tmp_path / "r.crt"),
        "--days",
        "30",
    )
    assert code == 0, err
    rsa_cert = x509.load_pem_x509_certificate((tmp_path / "r.crt").read_bytes())
    assert rsa_cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_check_reports_the_broken_rule(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert tokenauth(capsys, "check", str(setup.config))[0] == 0
    setup.acl_file.write_text("acl:\n  - match: {ip: 'not-an-ip'}\n    actions: []\n")
    code, _, err = tokenauth(capsys, "check", str(setup.config))
    assert code == 2
    assert "rule 1: match.ip" in err


async def test_serve_over_https_and_stop(setup: Setup) -> None:
    tls_cert = self_signed_certificate(setup.key, "127.0.0.1")
    (setup.directory / "tls.crt").write_bytes(certificate_pem(tls_cert))
    (setup.directory / "tls.key").write_bytes(key_pem(setup.key))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TOKENAUTH_HTTP_ADDR": f"127.0.0.1:{port}",
        "TOKENAUTH_HTTP_TLS_CERTIFICATE": "tls.crt",
        "TOKENAUTH_HTTP_TLS_KEY": "tls.key",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenauth",
        "serve",
        str(setup.config),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    context = ssl.create_default_context(cafile=str(setup.directory / "tls.crt"))
    context.check_hostname = False  # the test certificate names no host
    url = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(url + "/health", ssl=context) as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            params = {"service": SERVICE, "scope": "repository:alice/a:pull"}
            headers = basic("alice", "alice-pw")
            async with session.get(url + "/auth", params=params, headers=headers, ssl=context) as r:
                assert r.status == 200
                assert setup.verify((await r.json())["token"]).subject == "alice"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0
    log = stderr.decode()
    assert '"outcome": "granted"' in log and "alice-pw" not in log
