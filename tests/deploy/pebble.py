"""Let's Encrypt's test CA, Debian's ``pebble``, on loopback with a configuration written
for the test: its HTTPS certificate from the test PKI, and its TLS-ALPN-01 validation
port pointed at the registry under test, so the challenge is validated for real.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.pki import Pki
from tests.support.portside_servers import free_port


@dataclass
class Pebble:
    process: subprocess.Popen[bytes]
    dns: subprocess.Popen[bytes]
    port: int
    management_port: int
    trust: Path  # the CA of pebble's own HTTPS certificate
    log_path: Path

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def issuing_root(self) -> bytes:
        """The root pebble signs certificates under (new at every start)."""
        context = ssl.create_default_context(cafile=str(self.trust))
        url = f"https://localhost:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return bytes(response.read())

    def stop(self) -> None:
        for process in (self.process, self.dns):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def start_dns(challtestsrv: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """pebble-challtestsrv as pebble's DNS server only: every name is 127.0.0.1 (no AAAA,
    so validation never tries ::1, where the registry does not listen)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                challtestsrv,
                f"-dns01=127.0.0.1:{port}",
                "-defaultIPv4=127.0.0.1",
                "-defaultIPv6=",
                "-http01=",
                "-https01=",
                "-tlsalpn01=",
                f"-management=127.0.0.1:{free_port()}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def start_pebble(pebble: str, directory: Path, pki: Pki, tls_port: int) -> Pebble:
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = pki.write_bundle(directory)
    trust = pki.write_root(directory / "pebble-https-root.crt")
    port, management = free_port(), free_port()
    config = directory / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(certificate),
                    "privateKey": str(key),
                    "httpPort": free_port(),
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    log_path = directory / "pebble.log"
    dns_port = free_port()
    dns = start_dns(str(Path(pebble).with_name("pebble-challtestsrv")), dns_port, log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [pebble, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
            # Real validation, but no random sleeps and no rejected nonces: a quick,
            # deterministic run.
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PATH": "/usr/bin"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Pebble(process, dns, port, management, trust, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pebble exited:\n{log_path.read_text()}")
        try:
            server.issuing_root()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError(f"pebble did not answer:\n{log_path.read_text()}")
