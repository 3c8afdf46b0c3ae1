"""External programs (docker_auth's ext_auth / ext_authz contract), run for real: small
Python scripts written by each test, started by tokenauth with the request on stdin."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from tests.tokenauth.conftest import (
    CONFIG,
    ClientFactory,
    Setup,
    fetch_token,
    granted,
)

AUTH_SCRIPT = """\
import json, os, sys, time
user, _, password = sys.stdin.read().partition(" ")
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv, "start": time.time(), "pid": os.getpid()}}) + "\\n")
time.sleep({sleep})
with open({log!r}, "a") as log:
    log.write(json.dumps({{"end": time.time()}}) + "\\n")
if user == "hang":
    time.sleep(60)
if user == "broken":
    sys.exit(3)
if user == "eve" and password == "eve ext pw":  # spaces in a password are kept
    print(json.dumps({{"labels": {{"group": ["developers"], "other": ["x"]}}}}))
    sys.exit(0)
sys.exit(1 if user == "eve" else 2)
"""

AUTHZ_SCRIPT = """\
import json, sys
info = json.loads(sys.stdin.read())
if info["Name"].startswith("fail/"):
    sys.exit(7)
if info["Name"].startswith("deny/"):
    sys.exit(1)
if info["Name"].startswith("team/") and "developers" in info["Labels"]["group"]:
    print(json.dumps(["pull"]))
sys.exit(0 if info["Name"].startswith("team/") else 1)
"""

ACL_FIRST = """\
acl:
  - match: {account: admin}
    actions: ["*"]
"""


def external(setup: Setup, *, sleep: float = 0, timeout: str = "5s", concurrency: int = 4) -> Path:
    log = setup.directory / "program.log"
    script = setup.directory / "extauth.py"
    script.write_text(AUTH_SCRIPT.format(log=str(log), sleep=sleep))
    authz = setup.directory / "extauthz.py"
    authz.write_text(AUTHZ_SCRIPT)
    setup.acl_file.write_text(ACL_FIRST)
    setup.config.write_text(
        CONFIG
        + f"""\
extauth:
  command: {sys.executable}
  args: [{script}]
  timeout: {timeout}
  concurrency: {concurrency}
extauthz:
  command: {sys.executable}
  args: [{authz}]
authn: [extauth, users]
"""
    )
    return log


def runs(log: Path) -> list[dict[str, float]]:
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    starts = [line for line in lines if "start" in line]
    ends = [line["end"] for line in lines if "end" in line]
    return [{**start, "end": end} for start, end in zip(starts, ends, strict=False)]


async def test_the_program_decides_and_its_groups_reach_the_acl(
    make_client: ClientFactory, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    log = external(setup)
    client = await make_client()
    scopes = ["repository:team/app:pull,push", "repository:other/app:pull"]
    with caplog.at_level(logging.DEBUG):
        status, body, _ = await fetch_token(
            client, *scopes, auth=("eve", "eve ext pw"), offline_token="true"
        )
    assert status == 200, body
    # extauthz: team/* with the developers group gets what the program printed.
    assert granted(setup, body) == {"repository:team/app": ("pull",)}
    assert "refresh_token" not in body  # the program cannot tell when a password changes
    assert (await fetch_token(client, auth=("eve", "wrong")))[0] == 401
    # Exit 2, not mine: the htpasswd users are asked next.
    status, body, _ = await fetch_token(client, "repository:x/y:pull", auth=("admin", "admin-pw"))
    assert status == 200 and granted(setup, body) == {"repository:x/y": ("pull",)}
    assert (await fetch_token(client, auth=("nobody", "x")))[0] == 401
    # The password travelled on stdin only: never in the arguments, never in a log.
    assert all("eve ext pw" not in json.dumps(run["argv"]) for run in runs(log))
    assert "eve ext pw" not in caplog.text


async def test_a_failing_or_slow_program_answers_503_and_is_killed(
    make_client: ClientFactory, setup: Setup
) -> None:
    log = external(setup, timeout="1s")
    client = await make_client()
    status, body, headers = await fetch_token(client, auth=("broken", "x"))
    assert status == 503 and body["errors"][0]["code"] == "UNAVAILABLE"
    assert "Retry-After" in headers
    started = time.monotonic()
    status, body, _ = await fetch_token(client, auth=("hang", "x"))
    assert status == 503 and time.monotonic() - started < 20  # 1s timeout, generous margin
    pid = int(runs(log)[-1]["pid"])
    for _ in range(100):  # the kill is immediate; reaping may take a moment
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the timed-out program is still running")


async def test_at_most_concurrency_programs_run_at_once(
    make_client: ClientFactory, setup: Setup
) -> None:
    log = external(setup, sleep=0.3, concurrency=1, timeout="30s")
    client = await make_client()
    results = await asyncio.gather(
        *(fetch_token(client, auth=("eve", "eve ext pw")) for _ in range(3))
    )
    assert [status for status, _, _ in results] == [200, 200, 200]
    intervals = sorted((run["start"], run["end"]) for run in runs(log))
    assert len(intervals) == 3
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert start >= end  # one after the other, never overlapping


async def test_the_external_authorizer_denies_and_fails_closed(
    make_client: ClientFactory, setup: Setup
) -> None:
    external(setup)
    client = await make_client()
    auth = ("eve", "eve ext pw")
    status, body, _ = await fetch_token(client, "repository:deny/x:pull", auth=auth)
    assert status == 200 and granted(setup, body) == {}
    status, body, _ = await fetch_token(client, "repository:fail/x:pull", auth=auth)
    assert status == 503 and body["errors"][0]["code"] == "UNAVAILABLE"
    # The ACL is asked first: a matching rule decides without the program.
    status, body, _ = await fetch_token(
        client, "repository:fail/x:pull", auth=("admin", "admin-pw")
    )
    assert status == 200 and granted(setup, body) == {"repository:fail/x": ("pull",)}
