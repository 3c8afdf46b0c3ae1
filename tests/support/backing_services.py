"""Real backing services for the scale-out tests: S3-compatible servers (moto's server
mode, and Ceph's RADOS Gateway from ``tests.support.rgw``) and ``redis-server``, each a
process on a free loopback port.

The session-wide instances start on first use and ``tests/conftest.py`` stops them at the
end of the session, so a run that needs neither never pays for starting them. A test that
must stop a service starts its own with ``start()``/``stop()``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from registry.config import S3DriverConfig
from tests.support.tools import free_port, unavailable

START_TIMEOUT = 30.0


class Service:
    """A server process on 127.0.0.1:<port>, its output in a log file (never a pipe: a
    chatty server would block once the pipe is full)."""

    name = "service"
    start_timeout = START_TIMEOUT
    # A server that starts daemons of its own runs in its own process group, so that
    # stop() can end them all even if the server itself dies first.
    new_session = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir

    def command(self) -> list[str]:
        raise NotImplementedError

    def environ(self) -> dict[str, str] | None:
        """The process's environment (None: this one's)."""
        return None

    def ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def launch(self) -> None:
        """Start the process without waiting (``wait_ready`` waits)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()  # a restart keeps its port
        # Appended to: a restarted server (same port) keeps what it logged before.
        log = (self.workdir / f"{self.name}-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self.environ(),
            start_new_session=self.new_session,
        )
        log.close()
        self.log_path = Path(log.name)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not start in {self.start_timeout}s; see {self.log_path}"
        )

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.start_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.new_session:
            # Whatever the server started and did not stop (it may have been killed).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would end it: no clean-up at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class S3Server(Service):
    """An S3-compatible server: what a test needs to point a registry or a driver at it.
    ``MotoServer`` and ``tests.support.rgw.RadosGateway`` both are one, so a test (and
    the ``s3_server`` fixtures) can take either."""

    access_key = "portside-test"
    secret_key = "portside-test-secret"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def s3_environ(self, bucket: str, prefix: str = "REGISTRY_STORAGE_S3_") -> dict[str, str]:
        """``REGISTRY_STORAGE_S3_*`` settings of a registry storing in ``bucket`` here."""
        return {
            prefix + "BUCKET": bucket,
            prefix + "REGION": "us-east-1",
            prefix + "REGIONENDPOINT": self.url,
            prefix + "FORCEPATHSTYLE": "true",
            prefix + "ACCESSKEY": self.access_key,
            prefix + "SECRETKEY": self.secret_key,
            prefix + "CHUNKSIZE": str(5 * 1024 * 1024),
            prefix + "MAXRETRIES": "2",
            prefix + "RETRYDELAY": "10ms",
        }

    def driver_config(self, bucket: str, **overrides: Any) -> S3DriverConfig:
        """The same settings as ``s3_environ``, as the driver's configuration."""
        settings: dict[str, Any] = {
            "bucket": bucket,
            "region": "us-east-1",
            "regionendpoint": self.url,
            "forcepathstyle": True,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "chunksize": 5 * 1024 * 1024,
            "maxretries": 2,
            "retrydelay": datetime.timedelta(milliseconds=10),
        }
        return S3DriverConfig(**{**settings, **overrides})

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket, by a signed CreateBucket (any S3 server checks it)."""
        import botocore.session

        bucket = name or f"portside-{uuid.uuid4().hex[:20]}"
        client = botocore.session.get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )
        try:
            client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]  # botocore builds its methods at run time
        finally:
            client.close()
        return bucket


class MotoServer(S3Server):
    """moto's S3 server: a real S3 HTTP API (multipart uploads, copies, ranges) in memory.
    It enforces S3's 5 MiB minimum part size, as AWS does."""

    name = "moto"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        import urllib.request

        if not super().ready():
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):  # noqa: S310
                return True
        except OSError:
            return False


class RedisServer(Service):
    """``redis-server`` with persistence off: nothing is written to disk."""

    name = "redis"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed (Debian package redis-server)")
        assert binary is not None
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


# The S3 servers the tests parametrised over S3 run against, by name. PORTSIDE_S3 picks
# (comma-separated); by default both: moto for its speed, RGW because it is a real S3.
S3_KINDS = ("moto", "rgw")


def s3_kinds() -> list[str]:
    """The S3 servers this run tests against (``PORTSIDE_S3=moto`` for a quick run)."""
    chosen = [k.strip() for k in os.environ.get("PORTSIDE_S3", ",".join(S3_KINDS)).split(",")]
    unknown = sorted(set(chosen) - set(S3_KINDS))
    if unknown or not chosen:
        raise ValueError(f"PORTSIDE_S3: expected some of {', '.join(S3_KINDS)}, got {unknown}")
    if os.environ.get("CI") == "true" and "rgw" not in chosen:
        raise ValueError("PORTSIDE_S3: CI must test against rgw")
    return chosen


class SharedServices:
    """The session's S3 (moto, RGW) and Redis servers, each started on first use."""

    def __init__(self, workdir: Path) -> None:
        from tests.support.rgw import RadosGateway  # it builds on this module

        self.workdir = workdir
        self.moto = MotoServer(workdir / "moto")
        self.radosgw = RadosGateway(workdir / "rgw")
        self.redis = RedisServer(workdir / "redis")

    def s3(self) -> MotoServer:
        if not self.moto.running:
            self.moto.start()
        return self.moto

    def rgw(self) -> S3Server:
        if not self.radosgw.running:
            self.radosgw.start()
        return self.radosgw

    def s3_server(self, kind: str) -> S3Server:
        """The session's S3 server of that kind (one of ``S3_KINDS``)."""
        return self.rgw() if kind == "rgw" else self.s3()

    def redis_server(self) -> RedisServer:
        if not self.redis.running:
            self.redis.start()
        return self.redis

    def stop(self) -> None:
        self.moto.stop()
        self.radosgw.stop()
        self.redis.stop()


_shared: SharedServices | None = None


def shared_services() -> SharedServices:
    """The session-wide services (tests/conftest.py sets the work directory and stops them)."""
    global _shared
    if _shared is None:
        import tempfile

        _shared = SharedServices(Path(tempfile.mkdtemp(prefix="portside-services-")))
    return _shared


def stop_shared_services() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        shutil.rmtree(_shared.workdir, ignore_errors=True)
        _shared = None
