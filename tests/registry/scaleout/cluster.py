"""Several registry processes behind nginx, as docs/scaling.md deploys them: each runs
``python -m registry serve CONFIG`` with the same S3 bucket, Redis and ``http.secret``;
nginx balances them round-robin and retries a request on the next instance when one
cannot be reached. Every instance names itself in an ``X-Portside-Instance`` header
(through ``http.headers``), so a test sees where each request landed."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.backing_services import MotoServer, Service, _missing
from tests.support.portside_servers import REPOSITORY_ROOT

INSTANCE_HEADER = "X-Portside-Instance"


class RegistryProcess(Service):
    name = "registry"

    def __init__(self, workdir: Path, label: str, settings: dict[str, Any]) -> None:
        super().__init__(workdir)
        self.label = label
        self.settings = settings

    def command(self) -> list[str]:
        config = json.loads(json.dumps(self.settings))  # JSON is YAML
        config["http"]["addr"] = f"127.0.0.1:{self.port}"
        config["http"]["headers"] = {INSTANCE_HEADER: [self.label]}
        path = self.workdir / f"config-{self.label}.yml"
        path.write_text(json.dumps(config, indent=2))
        return [sys.executable, "-m", "registry", "serve", str(path)]

    def environ(self) -> dict[str, str]:
        # The registry reads every REGISTRY_* variable as configuration. It runs in its
        # own directory: the code is this checkout's, not whatever is installed.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        return {**env, "PYTHONPATH": str(REPOSITORY_ROOT)}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


NGINX_CONFIG = """\
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/nginx-access.log;
    client_body_temp_path {dir}/client-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    upstream registry {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://registry;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            # A body is buffered whole before it is sent, so that a request whose
            # instance cannot be reached can be sent again to the next one.
            proxy_request_buffering on;
            proxy_buffering off;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class NginxBalancer(Service):
    name = "nginx"

    def __init__(self, workdir: Path, upstreams: list[RegistryProcess]) -> None:
        super().__init__(workdir)
        self.upstreams = upstreams

    def command(self) -> list[str]:
        binary = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if binary is None:
            _missing("nginx is not installed (Debian package nginx)")
        assert binary is not None
        servers = "\n".join(
            f"        server 127.0.0.1:{u.port} max_fails=1 fail_timeout=30s;"
            for u in self.upstreams
        )
        config = self.workdir / "nginx.conf"
        # Started as root, nginx's workers would run as nobody and could not use the
        # temporary directories here: keep them as this user.
        user = "user root;\n" if os.geteuid() == 0 else ""
        config.write_text(
            NGINX_CONFIG.format(user=user, dir=self.workdir, servers=servers, port=self.port)
        )
        return [
            binary,
            "-p",
            str(self.workdir),
            "-c",
            str(config),
            "-e",
            str(self.workdir / "nginx-error.log"),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def instance_settings(
    moto: MotoServer, bucket: str, redis_addr: str, secret: str
) -> dict[str, Any]:
    """The configuration every instance shares (each adds its own address)."""
    # The environment's strings, read as YAML reads them (numbers, booleans).
    s3 = {
        k.removeprefix("REGISTRY_STORAGE_S3_").lower(): yaml.safe_load(v)
        for k, v in moto.s3_environ(bucket).items()
    }
    return {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "s3": s3,
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "redis"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "redis": {"addr": redis_addr},
        "http": {"secret": secret, "draintimeout": "1s"},
    }


class Cluster:
    def __init__(self, workdir: Path, settings: dict[str, Any], size: int = 3) -> None:
        self.instances = [
            RegistryProcess(workdir / f"registry-{label}", label, settings)
            for label in "abcdefgh"[:size]
        ]
        self.balancer = NginxBalancer(workdir / "nginx", self.instances)

    def start(self) -> None:
        for instance in self.instances:
            instance.launch()  # in parallel: each takes a second to import
        try:
            for instance in self.instances:
                instance.wait_ready()
            self.balancer.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.balancer.stop()
        for instance in self.instances:
            instance.stop()
