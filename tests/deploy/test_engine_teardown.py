"""The test engines clean up after themselves: once a session's engine is stopped, nothing
stays mounted in its scratch directory and the directory is gone.

A container on the host network makes dockerd mount the host's network namespace at
``<exec-root>/netns/default`` (``nsfs``); dockerd leaves that mount behind when it exits,
and with it a directory no ``rmtree`` can remove.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.deploy.engine import start_build_engine
from tests.support.clients import docker_client, write_rootfs_tarball
from tests.support.docker_engine import engine_for_session
from tests.support.mounts import mounts_below, unmount_below


def test_a_stopped_engine_leaves_no_mount_and_no_directory(tmp_path: Path) -> None:
    session = engine_for_session("portside-teardown-", start_build_engine)
    engine = next(session)
    top = engine.directory.parent  # engine_for_session's scratch directory
    try:
        docker = docker_client(shutil.which("docker") or "docker", engine.client_env(tmp_path))
        tarball = write_rootfs_tarball(tmp_path / "rootfs.tar", "teardown")
        docker.ok("import", str(tarball), "teardown:test")
        # The entry point does not exist, so the container fails at once: but only after
        # dockerd has set up its network, which is all this needs.
        docker.run("run", "--rm", "--network=host", "--entrypoint=/nonexistent", "teardown:test")
        assert engine.directory / "exec" / "netns" / "default" in mounts_below(top)

        assert next(session, None) is None  # the fixture's teardown: stop, unmount, remove
        assert mounts_below(top) == []
        assert not top.exists()
    finally:
        session.close()
        if top.exists():  # the test failed: leave the machine as it was all the same
            unmount_below(top)
            shutil.rmtree(top, ignore_errors=True)
