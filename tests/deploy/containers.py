"""Helpers for the container tests: file ownership for the image's user, readiness."""

from __future__ import annotations

import http.client
import os
import ssl
import time
from pathlib import Path

from tests.deploy.https import https_get
from tests.support.clients import CommandLine

# The image runs as this uid/gid (Dockerfile): bind-mounted directories must be its own.
IMAGE_UID = 1000


def give_to_image_user(*paths: Path) -> None:
    """chown -R 1000:1000, as docs/deployment.md tells operators to do for bind mounts."""
    for top in paths:
        for directory, _, files in os.walk(top):
            os.chown(directory, IMAGE_UID, IMAGE_UID)
            for name in files:
                os.chown(os.path.join(directory, name), IMAGE_UID, IMAGE_UID)


def wait_for_https(
    docker: CommandLine,
    container: str,
    port: int,
    context: ssl.SSLContext,
    timeout: float = 60,
    path: str = "/",
) -> None:
    """Until ``GET path`` answers 200 over TLS; fail with the container's log if it stops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if https_get(port, path, context) == 200:
                return
        except (http.client.HTTPException, OSError):
            pass
        state = docker.run("inspect", "--format", "{{.State.Running}}", container)
        if state.stdout.strip() != "true":
            break
        time.sleep(0.2)
    logs = docker.run("logs", container)
    raise AssertionError(f"{container} did not serve on {port}:\n{logs.stdout}{logs.stderr}")


def wait_for_http(docker: CommandLine, container: str, port: int, timeout: float = 60) -> None:
    """Until ``GET /`` answers 200 over plain HTTP on 127.0.0.1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                return
        except (http.client.HTTPException, OSError):
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    logs = docker.run("logs", container)
    raise AssertionError(f"{container} did not serve on {port}:\n{logs.stdout}{logs.stderr}")
