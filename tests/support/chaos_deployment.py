"""The chaos soak's deployment: several registries and tokenauth replicas in token mode,
each group behind its own nginx, sharing one S3 bucket and one Redis, as docs/scaling.md
deploys them (``bench/soak`` drives load and faults through it).

Both backing services are pluggable. The S3 server is any ``S3Server`` (moto today; a
Ceph RADOS Gateway ``Service`` has the same interface). Redis is a ``RedisTopology``: it
says what goes in both services' ``redis`` section, and how to restart it, and — when it
has replicas and sentinels — how to fail it over (``failover``, optional). ``PlainRedis``
is one ``redis-server`` whose restart the soak drives.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tests.registry.scaleout.cluster import RegistryProcess, instance_settings
from tests.support.backing_services import RedisServer, S3Server
from tests.support.balancer import NginxBalancer
from tests.support.deployments import registry_token_auth, tokenauth_config, write_token_files
from tests.support.portside_servers import ServerProcess, free_port
from tests.support.redis_sentinel import RedisSentinelGroup

# nginx puts an instance back into rotation this soon after it failed once: instances
# come back within seconds here, and three of them cannot all sit out 30s.
FAIL_TIMEOUT_SECONDS = 2
TOKEN_LIFETIME = "300s"


class RedisTopology(Protocol):
    """Redis as the services see it, and the faults the soak may cause in it."""

    def redis_config(self) -> dict[str, Any]:
        """The ``redis`` section of every registry's and tokenauth's configuration."""
        ...

    def restart(self) -> None:
        """Stop Redis abruptly and start it again (blocking until it answers)."""
        ...


@runtime_checkable
class FailoverTopology(RedisTopology, Protocol):
    """A topology with replicas: ``failover`` promotes one (blocking until it serves)."""

    def failover(self) -> None: ...


class PlainRedis:
    """One ``redis-server``; a restart is a SIGKILL and a start on the same port, which
    loses every key (persistence is off), as a crash of a cache-only Redis does."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def redis_config(self) -> dict[str, Any]:
        return {"addr": self.server.addr}

    def restart(self) -> None:
        self.server.kill()
        self.server.start()


class SentinelRedis:
    """A master, a replica and three sentinels (``RedisSentinelGroup``): the services
    reach the master through the sentinels. A restart is a SIGKILL of the master, the
    promotion the sentinels make, and the old master's start on the same port (empty, as
    persistence is off, it becomes the new master's replica). A failover is
    ``SENTINEL FAILOVER``."""

    def __init__(self, group: RedisSentinelGroup) -> None:
        self.group = group

    def redis_config(self) -> dict[str, Any]:
        return self.group.redis_settings()

    def restart(self) -> None:
        # The master crashes; the sentinels promote the replica, and the old master comes
        # back as its replica. (Reviving it at once, empty, before they notice left the
        # group without a replica in sync for minutes: every later failover was refused.)
        old = self.group.kill_master()
        self.group.wait_for_new_master(old)
        self.group.revive(old)

    def failover(self) -> None:
        try:
            self.group.failover()
        except AssertionError:
            # The sentinels refuse while no replica is in sync, e.g. for a while after a
            # restarted master came back empty and the replica resynchronises from it:
            # a refused fault, not the registry's failure. Once settled, they accept.
            self.group.wait_settled(timeout=90.0)
            self.group.failover()


class Restartable(Protocol):
    """A process the chaos driver may kill and start again on the same port."""

    @property
    def port(self) -> int: ...

    def kill(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class SoakDeployment:
    directory: Path
    registries: list[RegistryProcess]
    tokenauths: list[ServerProcess]
    registry_balancer: NginxBalancer
    token_balancer: NginxBalancer
    redis: RedisTopology

    @property
    def url(self) -> str:
        """Where clients reach the registries."""
        return self.registry_balancer.url

    @property
    def killable(self) -> dict[str, Sequence[Restartable]]:
        return {"registry": self.registries, "tokenauth": self.tokenauths}

    def stop(self) -> None:
        for balancer in (self.registry_balancer, self.token_balancer):
            balancer.stop()
        for registry in self.registries:
            registry.stop()
        for tokenauth in self.tokenauths:
            tokenauth.stop()


def start_soak_deployment(
    directory: Path,
    s3: S3Server,
    redis: RedisTopology,
    *,
    registries: int = 3,
    tokenauths: int = 2,
) -> SoakDeployment:
    """Start everything (the backing services must already run); stop it with ``stop``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_token_files(directory)
    token_servers = []
    for index in range(tokenauths):
        port = free_port()
        # Tokens live 5 minutes (made explicit): in a soak of minutes, clients log in
        # again while replicas are being killed. 60s was too short on the loaded
        # machine: a request queued longer than that arrived with an expired token.
        extra = {"redis": redis.redis_config(), "token": {"lifetime": TOKEN_LIFETIME}}
        config = tokenauth_config(f"127.0.0.1:{port}", extra)
        config["loglevel"] = "warning"
        path = directory / f"tokenauth-{index}.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        token_servers.append(
            ServerProcess(
                f"tokenauth {index}",
                ["tokenauth", "serve", str(path)],
                port,
                "/health",
                directory / f"tokenauth-{index}.log",
            )
        )
    token_balancer = NginxBalancer(
        directory / "nginx-tokenauth", token_servers, fail_timeout=FAIL_TIMEOUT_SECONDS
    )
    token_balancer.port = free_port()  # the realm must be known before the registries start
    settings = instance_settings(s3, s3.create_bucket(), "", f"soak-{uuid.uuid4().hex}")
    settings["redis"] = redis.redis_config()
    settings["auth"] = registry_token_auth(f"{token_balancer.url}/auth", directory)
    instances = [
        RegistryProcess(directory / f"registry-{label}", label, settings)
        for label in "abcdefgh"[:registries]
    ]
    registry_balancer = NginxBalancer(
        directory / "nginx-registry", instances, fail_timeout=FAIL_TIMEOUT_SECONDS
    )
    deployment = SoakDeployment(
        directory, instances, token_servers, registry_balancer, token_balancer, redis
    )
    try:
        for instance in instances:
            instance.launch()  # in parallel: each takes a second to import
        for server in token_servers:
            server.start()
        for instance in instances:
            instance.wait_ready()
        token_balancer.start()
        registry_balancer.start()
    except BaseException:
        deployment.stop()
        raise
    return deployment
