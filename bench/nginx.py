"""nginx as the pull baseline: one process with ``sendfile on`` serving a registry's store.

It serves Distribution's on-disk layout as plain static files, so the very file a
registry sends for ``GET /v2/<name>/blobs/<digest>`` is ``/blobs/sha256/xx/<hex>/data``
here: the difference between the two is only what the registry does per request and how
it drives the kernel's sendfile. ``master_process off`` makes the one process the worker,
so its CPU time and peak RSS are the server's, as for the registries.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.servers import Server, free_port

NGINX = "nginx"
BINARY = "nginx"


def nginx_available() -> bool:
    return shutil.which(BINARY) is not None


def nginx_config(store: Path, port: int, workdir: Path) -> str:
    """Defaults everywhere but what makes it a fair peer: one worker, sendfile on, no
    access log (the registries run with theirs off too), and an answer for readiness."""
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {workdir / "client_body"};
  proxy_temp_path {workdir / "proxy"};
  fastcgi_temp_path {workdir / "fastcgi"};
  uwsgi_temp_path {workdir / "uwsgi"};
  scgi_temp_path {workdir / "scgi"};
  server {{
    listen 127.0.0.1:{port};
    root {store};
    location = /ready {{ return 200; }}
  }}
}}
"""


def nginx_server(workdir: Path, root: Path) -> Server:
    """nginx (not started) serving the blobs of the registry store under ``root``."""
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(root / "docker/registry/v2", port, workdir))
    command = [
        shutil.which(BINARY) or BINARY,
        "-c",
        str(config),
        "-e",
        str(workdir / "nginx-error.log"),
    ]
    return Server(
        NGINX, command, port, workdir / "nginx.log", ready_path="/ready", root=root, cwd=workdir
    )


def blob_url(server: Server, digest: str) -> str:
    """Where nginx serves a blob: its path in Distribution's layout."""
    algorithm, hex_digest = digest.split(":", 1)
    return f"{server.url}/blobs/{algorithm}/{hex_digest[:2]}/{hex_digest}/data"
