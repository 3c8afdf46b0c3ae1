"""A Docker engine for the image and compose tests, on overlay2 when the kernel allows.

The e2e engine (:mod:`tests.support.docker_engine`) defaults to ``vfs``, which copies the whole
root filesystem for every build step: with a Python base image each ``ENV`` or ``USER``
line costs about 16 s, a full image build minutes. overlay2 builds the same image in
well under a minute, so these tests start their own engine (no iptables, no
bridge, all state in one scratch directory) and fall back to ``vfs`` where overlay2
cannot mount.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.docker_engine import DockerEngine, EngineUnavailable, start_docker_engine

STORAGE_DRIVERS = ("overlay2", "vfs")


def start_build_engine(dockerd: str, directory: Path, timeout: float = 30.0) -> DockerEngine:
    """dockerd with state in ``directory``: overlay2 if it works here, else vfs."""
    failures = []
    for driver in STORAGE_DRIVERS:
        root = directory / driver
        root.mkdir()
        try:
            return start_docker_engine(dockerd, root, timeout, storage_driver=driver)
        except EngineUnavailable as error:
            failures.append(f"{driver}: {error}")
    raise EngineUnavailable("\n".join(failures))
