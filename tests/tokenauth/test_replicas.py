"""Three tokenauth replicas behind nginx, sharing a key directory, the users file and a
real Redis (one server, or a master the sentinels name): the per-account budget of failed
logins holds across them, and a refresh token issued by one is redeemed by the others."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from shared.htpasswd import format_htpasswd_line
from tests.support.backing_services import shared_services
from tests.support.balancer import NginxBalancer
from tests.support.logins import guesses, parallel_logins
from tests.support.portside_servers import ServerProcess, free_port, run_python_module
from tests.support.redis_sentinel import RedisSentinelGroup

SERVICE, ISSUER = "replicas.test", "replicas-issuer"
PASSWORDS = {"alice": "alice-replica-pw", "bob": "bob-replica-pw"}
BUDGET = 5  # ratelimit.accountfailures
REPLICAS = 3
GUESSES = 30


@dataclass
class Replicas:
    servers: list[ServerProcess]
    balancer: NginxBalancer

    @property
    def url(self) -> URL:
        return URL(self.balancer.url) / "auth"


@pytest.fixture
def redis_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The replicas' ``redis`` section: the session's server, or a Sentinel group's master
    (Distribution 3's keys, as the registries read them)."""
    if getattr(request, "param", "server") == "server":
        yield {"addr": shared_services().redis_server().addr, "db": 3}
        return
    group = RedisSentinelGroup(tmp_path / "sentinels")
    group.start()
    yield {**group.redis_settings(), "db": 3}
    group.stop()


@pytest.fixture
def replicas(tmp_path: Path, redis_settings: dict[str, Any]) -> Iterator[Replicas]:
    run_python_module("tokenauth", "keygen", "--dir", str(tmp_path / "keys"))
    (tmp_path / "users").write_text(
        "".join(format_htpasswd_line(u, p, cost=4) + "\n" for u, p in PASSWORDS.items())
    )
    (tmp_path / "acl.yml").write_text('acl:\n  - match: {account: "/.+/"}\n    actions: [pull]\n')
    servers = []
    for index in range(REPLICAS):
        port = free_port()
        config = {
            "http": {"addr": f"127.0.0.1:{port}"},
            "token": {"issuer": ISSUER, "services": [SERVICE], "keydir": "keys"},
            "users": ["users"],
            "acl": "acl.yml",
            # Every guess comes from nginx's address: only the account budget counts here.
            "ratelimit": {"accountfailures": BUDGET, "ipfailures": 1000},
            "redis": redis_settings,
        }
        path = tmp_path / f"tokenauth-{index}.yml"
        path.write_text(json.dumps(config))
        servers.append(
            ServerProcess(
                f"tokenauth {index}",
                ["tokenauth", "serve", str(path)],
                port,
                "/health",
                tmp_path / f"tokenauth-{index}.log",
            )
        )
    balancer = NginxBalancer(tmp_path / "nginx", servers)
    try:
        for server in servers:
            server.start()
        balancer.start()
        yield Replicas(servers, balancer)
    finally:
        balancer.stop()
        for server in servers:
            server.stop()


def audited(server: ServerProcess, account: str) -> int:
    """How many token requests of ``account`` this replica decided."""
    return sum(
        1
        for line in server.log().splitlines()
        if "tokenauth.audit" in line and f'"account": "{account}"' in line
    )


async def wait_for_audit_lines(servers: list[ServerProcess], account: str, count: int) -> None:
    for _ in range(400):  # 20 s
        if sum(audited(server, account) for server in servers) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit lines of {account} within 20 s")


@pytest.mark.parametrize("redis_settings", ["server", "sentinels"], indirect=True)
async def test_account_budget_holds_across_replicas(replicas: Replicas) -> None:
    answers = await parallel_logins(replicas.url, guesses("alice", GUESSES), {"service": SERVICE})
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [401] * BUDGET + [429] * (GUESSES - BUDGET), statuses
    # Every replica answered some of them: the budget was shared, not each one's own.
    # Their audit lines are written by each replica's log thread a moment after the
    # answers: wait for all of them before counting.
    await wait_for_audit_lines(replicas.servers, "alice", GUESSES)
    assert all(audited(server, "alice") > 0 for server in replicas.servers)
    # The right password is refused too while the shared bucket is empty, on every replica.
    right = [("alice", PASSWORDS["alice"])] * REPLICAS
    assert {a.status for a in await parallel_logins(replicas.url, right, {"service": SERVICE})} == {
        429
    }
    # Another account is not affected.
    bob = [("bob", PASSWORDS["bob"])] * 6
    assert {a.status for a in await parallel_logins(replicas.url, bob, {"service": SERVICE})} == {
        200
    }


async def test_refresh_token_and_logins_work_at_every_replica(replicas: Replicas) -> None:
    first, *others = replicas.servers
    form = {"service": SERVICE, "client_id": "test", "access_type": "offline"}
    async with aiohttp.ClientSession() as session:
        password = {**form, "grant_type": "password", "username": "bob"}
        password["password"] = PASSWORDS["bob"]
        async with session.post(f"{first.url}/auth", data=password) as response:
            assert response.status == 200, await response.text()
            refresh = (await response.json())["refresh_token"]
        for server in others:
            grant = {**form, "grant_type": "refresh_token", "refresh_token": refresh}
            grant["scope"] = "repository:bob/app:pull"
            async with session.post(f"{server.url}/auth", data=grant) as response:
                body = await response.json()
                assert response.status == 200, body
                assert body["scope"] == "repository:bob/app:pull"
    # Repeated logins (each replica remembering them in its own credential cache).
    logins = [("bob", PASSWORDS["bob"])] * 12
    answers = await parallel_logins(replicas.url, logins, {"service": SERVICE})
    assert {a.status for a in answers} == {200}
