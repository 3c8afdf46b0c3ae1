"""Robot accounts: ``tokenauth robot`` run as a command, logins as ``robot$NAME`` against
the real app, rights intersected with the ACL, revocation and expiry at the next request."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.portside_servers import REPOSITORY_ROOT, run_python_module, server_env
from tests.tokenauth.conftest import (
    ACL,
    CONFIG,
    SERVICE,
    ClientFactory,
    Setup,
    TokenClient,
    fetch_token,
    granted,
)

ROBOT_ACL = (
    ACL
    + """\
  - match: {account: "robot$*", name: "ci/*"}
    actions: [pull, push]
    comment: robots may at most pull and push ci/*
"""
)


def use_robots(setup: Setup) -> None:
    setup.acl_file.write_text(ROBOT_ACL)
    setup.config.write_text(CONFIG + "robots: robots.yml\n")


def robot(setup: Setup, *args: str) -> str:
    return run_python_module("tokenauth", "robot", "--config", str(setup.config), *args)


async def post(client: TokenClient, **form: str) -> tuple[int, dict[str, Any]]:
    fields = {"service": SERVICE, "client_id": "ci", **form}
    async with client.post("/auth", data=fields) as response:
        return response.status, await response.json()


async def test_a_robot_gets_its_rights_intersected_with_the_acl(
    make_client: ClientFactory, setup: Setup
) -> None:
    use_robots(setup)
    secret = robot(
        setup,
        "create",
        "builder",
        "--rights",
        "repository:ci/*:pull,push,delete",
        "--expires",
        "90d",
    ).strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    stored = (setup.directory / "robots.yml").read_text()
    assert secret not in stored and "sha256:" in stored
    assert (setup.directory / "robots.yml").stat().st_mode & 0o777 == 0o600
    client = await make_client()
    scopes = ["repository:ci/app:push,pull,delete", "repository:alice/x:pull"]
    status, body, _ = await fetch_token(client, *scopes, auth=("robot$builder", secret))
    assert status == 200, body
    # delete: the robot's right, not the ACL's; alice/x: neither.
    assert granted(setup, body) == {"repository:ci/app": ("pull", "push")}
    # A narrower robot: at most what its rights say, though the ACL allows push.
    reader = robot(setup, "create", "reader", "--rights", "repository:ci/app:pull").strip()
    status, body, _ = await fetch_token(
        client,
        "repository:ci/app:push,pull",
        "repository:ci/other:pull",
        auth=("robot$reader", reader),
    )
    assert status == 200 and granted(setup, body) == {"repository:ci/app": ("pull",)}
    for user, password in [("robot$builder", "wrong"), ("robot$nobody", secret)]:
        assert (await fetch_token(client, auth=(user, password)))[0] == 401
    listing = robot(setup, "list")
    assert "robot$builder\trepository:ci/*:delete,pull,push\texpires 20" in listing
    assert secret not in listing and reader not in listing


async def test_revocation_takes_effect_on_the_next_token_request(
    make_client: ClientFactory, setup: Setup
) -> None:
    use_robots(setup)
    secret = robot(setup, "create", "ci", "--rights", "repository:ci/*:pull").strip()
    client = await make_client()
    status, body = await post(
        client, grant_type="password", username="robot$ci", password=secret, access_type="offline"
    )
    assert status == 200 and body["refresh_token"]
    refresh = body["refresh_token"]
    assert (await post(client, grant_type="refresh_token", refresh_token=refresh))[0] == 200
    robot(setup, "revoke", "ci")
    assert (await fetch_token(client, auth=("robot$ci", secret)))[0] == 401
    status, body = await post(client, grant_type="refresh_token", refresh_token=refresh)
    assert status == 401 and body["error"] == "invalid_grant"
    # Re-created under the same name: a new secret; the old one and its tokens stay dead.
    robot(setup, "create", "ci", "--rights", "repository:ci/*:pull")
    assert (await fetch_token(client, auth=("robot$ci", secret)))[0] == 401
    assert (await post(client, grant_type="refresh_token", refresh_token=refresh))[0] == 401


async def test_an_expired_robot_is_refused(make_client: ClientFactory, setup: Setup) -> None:
    use_robots(setup)
    secret = robot(setup, "create", "old", "--rights", "repository:ci/*:pull").strip()
    client = await make_client()
    assert (await fetch_token(client, auth=("robot$old", secret)))[0] == 200
    robots = setup.directory / "robots.yml"
    text = robots.read_text()
    robots.write_text(re.sub(r"expires: .*", "expires: '2020-01-01T00:00:00Z'", text))
    assert (await fetch_token(client, auth=("robot$old", secret)))[0] == 401
    assert "(expired)" in robot(setup, "list")


def test_bad_commands_are_refused_with_a_message(setup: Setup) -> None:
    use_robots(setup)
    for args, message in [
        (["create", "Bad Name", "--rights", "repository:ci/*:pull"], "NAME"),
        (["create", "ok", "--rights", "repository:ci/*:fly"], "actions"),
        (["create", "ok", "--rights", "repository:ci/*:pull", "--expires", "soon"], "--expires"),
        (["revoke", "absent"], "no robot"),
    ]:
        completed = subprocess.run(
            [sys.executable, "-m", "tokenauth", "robot", "--config", str(setup.config), *args],
            cwd=REPOSITORY_ROOT,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 2 and message in completed.stderr, completed.stderr
        assert "Traceback" not in completed.stderr
    assert not Path(setup.directory / "robots.yml").exists()
