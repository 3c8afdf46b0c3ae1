"""``scripts/run``, driven as a user runs it: real servers on free loopback ports, data in a
scratch directory. The login hint names the configured addresses and comes only once both
services answer; a port in use ends it at once with one line and nothing left running; open
mode never serves what token mode stored.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.portside_servers import free_port
from tests.support.run_script import LOGIN_HINT, RunScript, get, token_for

REPOSITORY = "private/image"
BLOB = b"pushed under token authentication"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def run_script(tmp_path: Path) -> Iterator[list[RunScript]]:
    """Every scripts/run a test starts, stopped with all it started at the end."""
    started: list[RunScript] = []
    yield started
    for script in started:
        script.stop()


def start(started: list[RunScript], directory: Path, env: dict[str, str], *args: str) -> RunScript:
    script = RunScript(directory, {"PORTSIDE_DATA": str(directory / "data"), **env}, args)
    started.append(script)
    return script.start()


def push_blob(registry: str, token: str) -> int:
    """A monolithic blob upload (POST with ``digest``); the status."""
    connection = http.client.HTTPConnection(registry, timeout=10)
    connection.request(
        "POST",
        f"/v2/{REPOSITORY}/blobs/uploads/?digest={BLOB_DIGEST}",
        body=BLOB,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
    )
    status = connection.getresponse().status
    connection.close()
    return status


def test_the_hint_names_the_configured_ports_once_both_answer(
    run_script: list[RunScript], tmp_path: Path
) -> None:
    registry, tokenauth = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    script = start(
        run_script, tmp_path, {"REGISTRY_HTTP_ADDR": registry, "TOKENAUTH_HTTP_ADDR": tokenauth}
    )
    hint = script.wait_for(LOGIN_HINT)
    # Both answer the moment the hint is out: no waiting here.
    challenge = get(f"http://{registry}/v2/")
    assert challenge.status == 401
    realm = f"http://{tokenauth}/auth"
    assert f'realm="{realm}"' in challenge.headers["WWW-Authenticate"]
    assert get(f"http://{tokenauth}/health").status == 200
    # The hint is right: its address and its password file log admin in.
    password_file = tmp_path / "data" / "auth" / "admin-password"
    assert hint.endswith(f"docker login {registry} -u admin --password-stdin < {password_file}")
    token = token_for(realm, "admin", password_file.read_text().strip(), "registry:catalog:*")
    assert get(f"http://{registry}/v2/", {"Authorization": f"Bearer {token}"}).status == 200


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound"])
@pytest.mark.parametrize("taken", ["REGISTRY_HTTP_ADDR", "TOKENAUTH_HTTP_ADDR"])
def test_a_port_in_use_ends_it_at_once_with_nothing_left_running(
    run_script: list[RunScript], tmp_path: Path, taken: str, listening: bool
) -> None:
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "TOKENAUTH_HTTP_ADDR": f"127.0.0.1:{free_port()}",
    }
    port = int(env[taken].rpartition(":")[2])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        if listening:  # else bound only: found by the service's own bind, not beforehand
            squatter.listen()
        script = start(run_script, tmp_path, env)
        status = script.wait_exit(timeout=90)
        output = script.output()
    assert status != 0, output
    assert f"127.0.0.1:{port}" in output or f"'127.0.0.1', {port}" in output, output
    assert LOGIN_HINT not in output
    assert script.live_members() == [], output


def test_one_port_for_both_is_refused(run_script: list[RunScript], tmp_path: Path) -> None:
    port = free_port()
    script = start(
        run_script,
        tmp_path,
        {"REGISTRY_HTTP_ADDR": f":{port}", "TOKENAUTH_HTTP_ADDR": f"localhost:{port}"},
    )
    assert script.wait_exit(timeout=30) == 2
    lines = script.output().splitlines()
    assert len(lines) == 1 and "same port" in lines[0], lines


def test_open_mode_does_not_serve_what_token_mode_stored(
    run_script: list[RunScript], tmp_path: Path
) -> None:
    registry, tokenauth = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {"REGISTRY_HTTP_ADDR": registry, "TOKENAUTH_HTTP_ADDR": tokenauth}
    protected = start(run_script, tmp_path, env)
    protected.wait_for(LOGIN_HINT)
    password = (tmp_path / "data" / "auth" / "admin-password").read_text().strip()
    token = token_for(
        f"http://{tokenauth}/auth", "admin", password, f"repository:{REPOSITORY}:push,pull"
    )
    assert push_blob(registry, token) == 201
    protected.stop()

    open_mode = start(run_script, tmp_path, {**env, "PORTSIDE_AUTH": "none"})
    notice = open_mode.wait_for("open (no authentication)")
    assert str(tmp_path / "data" / "registry-open") in notice
    assert get(f"http://{registry}/v2/{REPOSITORY}/blobs/{BLOB_DIGEST}").status == 404
    assert get(f"http://{registry}/v2/").status == 200  # it is open: the blob is not hidden
