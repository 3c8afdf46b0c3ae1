"""``auth: htpasswd``: Basic credentials against a bcrypt file, interchangeable with
Apache's ``htpasswd``, re-read when it changes; and the ``registry htpasswd`` command."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import pytest

from registry.htpasswd_command import htpasswd_main
from shared.htpasswd import format_htpasswd_line
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.support.tools import require_tool, run_tool

REALM = "Registry Realm"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_text(format_htpasswd_line("testuser", "testpassword", cost=4) + "\n")
    return path


@pytest.fixture
async def registry_basic(make_registry: ClientFactory, users_file: Path) -> RegistryClient:
    # The guide's environment form.
    return await make_registry(
        {
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": REALM,
            "REGISTRY_AUTH_HTPASSWD_PATH": str(users_file),
        }
    )


async def test_requests_without_valid_credentials_are_challenged(
    registry_basic: RegistryClient,
) -> None:
    for headers in ({}, basic("testuser", "wrong"), basic("nobody", "testpassword")):
        response = await registry_basic.get("/v2/", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert (await response.json())["errors"][0]["code"] == "UNAUTHORIZED"
    assert (await registry_basic.get("/")).status == 200
    ok = await registry_basic.get("/v2/", headers=basic("testuser", "testpassword"))
    assert ok.status == 200


async def test_valid_credentials_may_push_and_pull(registry_basic: RegistryClient) -> None:
    auth = basic("testuser", "testpassword")
    digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    pushed = await registry_basic.post(
        "/v2/any/repo/blobs/uploads/", params={"digest": digest}, data=b"foo", headers=auth
    )
    assert pushed.status == 201
    pulled = await registry_basic.get(f"/v2/any/repo/blobs/{digest}", headers=auth)
    assert await pulled.read() == b"foo"
    assert (await registry_basic.get(f"/v2/any/repo/blobs/{digest}")).status == 401


async def test_the_users_file_is_reread_when_it_changes(
    registry_basic: RegistryClient, users_file: Path
) -> None:
    newcomer = basic("newcomer", "fresh-password")
    assert (await registry_basic.get("/v2/", headers=newcomer)).status == 401
    users_file.write_text(format_htpasswd_line("newcomer", "fresh-password", cost=4) + "\n")
    assert (await registry_basic.get("/v2/", headers=newcomer)).status == 200
    old = basic("testuser", "testpassword")
    assert (await registry_basic.get("/v2/", headers=old)).status == 401


async def test_apache_lines_work_and_ours_satisfy_apache(
    make_registry: ClientFactory, tmp_path: Path
) -> None:
    apache = require_tool("htpasswd", "apache2-utils")
    made = await run_tool(apache, "-Bbn", "apacheuser", "apache-pw")
    assert made.returncode == 0, made.stderr
    users = tmp_path / "mixed.htpasswd"
    users.write_text(made.stdout.strip() + "\n" + format_htpasswd_line("ours", "our-pw") + "\n")
    client = await make_registry(
        {
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": REALM,
            "REGISTRY_AUTH_HTPASSWD_PATH": str(users),
        }
    )
    assert (await client.get("/v2/", headers=basic("apacheuser", "apache-pw"))).status == 200
    assert (await client.get("/v2/", headers=basic("ours", "our-pw"))).status == 200
    verified = await run_tool(apache, "-vb", str(users), "ours", "our-pw")
    assert verified.returncode == 0, verified.stderr
    refused = await run_tool(apache, "-vb", str(users), "ours", "not-it")
    assert refused.returncode != 0


async def test_htpasswd_command_prints_a_bcrypt_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert htpasswd_main(["-Bbn", "testuser", "testpassword"]) == 0
    line = capsys.readouterr().out.strip()
    user, _, hashed = line.partition(":")
    assert user == "testuser" and hashed.startswith("$2y$10$") and len(hashed) == 60
    assert htpasswd_main(["-mbn", "u", "p"]) == 2
    assert htpasswd_main(["-Bn"]) == 2
    # A cost in other digits than ASCII ones is a usage error, not a traceback.
    assert htpasswd_main(["-Bbn", "-C", "²", "u", "p"]) == 2


async def test_htpasswd_command_maintains_a_file(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert htpasswd_main(["-Bbc", "-C", "4", str(users), "alice", "one"]) == 0
    assert htpasswd_main(["-Bb", "-C4", str(users), "bob", "two"]) == 0
    assert htpasswd_main(["-Bb", "-C4", str(users), "alice", "three"]) == 0
    assert [line.split(":")[0] for line in users.read_text().splitlines()] == ["bob", "alice"]
    assert htpasswd_main(["-D", str(users), "bob"]) == 0
    assert [line.split(":")[0] for line in users.read_text().splitlines()] == ["alice"]


async def test_registry_cli_exposes_htpasswd(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "registry",
        "htpasswd",
        "-Bbn",
        "testuser",
        "testpassword",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert stdout.decode().startswith("testuser:$2y$")
