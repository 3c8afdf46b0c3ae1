"""nginx balancing several portside processes round-robin, as docs/scaling.md deploys
them: a request that cannot reach one instance (or gets a 502/503 from it) goes to the
next. Registries (tests/registry/scaleout) and tokenauth replicas use it alike."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tests.support.backing_services import Service
from tests.support.tools import unavailable


class Upstream(Protocol):
    """A server nginx sends requests to: it listens on 127.0.0.1:``port``."""

    @property
    def port(self) -> int: ...


NGINX_CONFIG = """\
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
# Each request proxied takes two connections, the client's and the instance's: 256 (what
# this said before) dropped connections once ~100 clients pushed at once.
worker_rlimit_nofile {files};
events {{ worker_connections {connections}; }}
http {{
    access_log {dir}/nginx-access.log;
    client_body_temp_path {dir}/client-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    upstream backends {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backends;
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
            # As docs/scaling.md: a read timeout makes nginx resend the request (and
            # non-idempotent ones too) while the first instance may still be working on it.
            proxy_read_timeout 900s;
        }}
    }}
}}
"""


WORKER_CONNECTIONS = 4096


class NginxBalancer(Service):
    name = "nginx"

    def __init__(
        self, workdir: Path, upstreams: Sequence[Upstream], *, fail_timeout: int = 30
    ) -> None:
        super().__init__(workdir)
        self.upstreams = upstreams
        # How long nginx leaves an instance alone after one failed attempt (its
        # ``fail_timeout``); a chaos test restarting instances every few seconds wants
        # them back in the rotation sooner than the default 30s.
        self.fail_timeout = fail_timeout

    def command(self) -> list[str]:
        binary = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if binary is None:
            unavailable("nginx is not installed (Debian package nginx)")
        assert binary is not None
        servers = "\n".join(
            f"        server 127.0.0.1:{u.port} max_fails=1 fail_timeout={self.fail_timeout}s;"
            for u in self.upstreams
        )
        config = self.workdir / "nginx.conf"
        # Started as root, nginx's workers would run as nobody and could not use the
        # temporary directories here: keep them as this user.
        user = "user root;\n" if os.geteuid() == 0 else ""
        config.write_text(
            NGINX_CONFIG.format(
                user=user,
                dir=self.workdir,
                servers=servers,
                port=self.port,
                connections=WORKER_CONNECTIONS,
                files=2 * WORKER_CONNECTIONS,
            )
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
