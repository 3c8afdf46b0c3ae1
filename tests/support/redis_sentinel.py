"""A Redis Sentinel deployment for tests: a master, a replica and three ``redis-sentinel``
processes (Debian package ``redis-sentinel``) on free loopback ports, with ways to fail
the master over (``SENTINEL FAILOVER``, or ``kill -9`` of the master) and to stop it all.

The sentinels judge a master down after ``down_after_ms`` (a second by default, where
production uses tens of seconds), so a test sees a whole failover in a few seconds.
Portside reaches the group as Distribution's go-redis does: ``redis.addrs`` names the
sentinels and ``redis.mastername`` the master (:meth:`RedisSentinelGroup.redis_settings`).
"""

from __future__ import annotations

import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from tests.support.backing_services import RedisServer, Service
from tests.support.tools import free_port, unavailable

MASTER_NAME = "portside"


def admin(port: int) -> redis.Redis:
    """A synchronous client of a server or sentinel, for the test's own use: use it in a
    ``with`` block, which closes its connection."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


class GroupMember(RedisServer):
    """``redis-server`` in a replicated group: a replica of ``master_port`` from its start
    (None: a master). A replica syncs at once, not after the five seconds Redis waits by
    default for more replicas to share one transfer."""

    def __init__(self, workdir: Path, master_port: int | None = None) -> None:
        super().__init__(workdir)
        self.master_port = master_port

    def command(self) -> list[str]:
        command = [*super().command(), "--repl-diskless-sync-delay", "0"]
        if self.master_port is not None:
            command += ["--replicaof", "127.0.0.1", str(self.master_port)]
        return command


class RedisSentinel(Service):
    """One ``redis-sentinel`` watching ``MASTER_NAME`` at ``master_port`` (quorum 2)."""

    name = "sentinel"

    def __init__(self, workdir: Path, master_port: int, down_after_ms: int) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.run_id = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # Sentinel's 40-hex-digit id
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        self.known: list[str] = []  # lines naming the group's other members

    def command(self) -> list[str]:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            unavailable("redis-sentinel is not installed (Debian package redis-sentinel)")
        assert binary is not None
        # Sentinel rewrites its file with what it learns: one file per process, written
        # once (a restart keeps what the sentinel learnt, as in production).
        path = self.workdir / f"sentinel-{self.port}.conf"
        if not path.exists():
            path.write_text(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f'dir "{self.workdir}"\n'
                'logfile ""\n'
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {max(3 * self.down_after_ms, 3000)}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                f"sentinel myid {self.run_id}\n" + "".join(line + "\n" for line in self.known)
            )
        return [binary, str(path)]

    def master_port_seen(self) -> int | None:
        """The master's port as this sentinel names it (None: it does not answer)."""
        try:
            with admin(self.port) as client:
                answer = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        except redis.RedisError:
            return None
        return int(answer[1]) if answer else None


class RedisSentinelGroup:
    """A master, a replica and three sentinels. ``start`` returns once the sentinels know
    each other and the replica, so a failover can happen at once."""

    def __init__(self, workdir: Path, *, down_after_ms: int = 1000, sentinels: int = 3) -> None:
        self.workdir = workdir
        first = GroupMember(workdir / "redis-a")
        first.port = free_port()
        replica = GroupMember(workdir / "redis-b", first.port)
        replica.port = free_port()
        self.servers: list[RedisServer] = [first, replica]
        self.sentinels = [
            RedisSentinel(workdir / f"sentinel-{index}", first.port, down_after_ms)
            for index in range(sentinels)
        ]
        self.failed_at = 0.0  # time.monotonic() of the last failover asked for or kill
        # Each sentinel starts knowing the others and the replica, as a sentinel that has
        # run for a while does: without, they find each other by hello messages, every
        # two seconds, and a failover cannot start before they have.
        for sentinel in self.sentinels:
            sentinel.known = [
                f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {replica.port}",
                *(
                    f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other.port} {other.run_id}"
                    for other in self.sentinels
                    if other is not sentinel
                ),
            ]

    # --- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        try:
            for server in self.servers:
                server.launch()
            for server in self.servers:
                server.wait_ready()
            # The sentinels' first look at the replica must find it in sync: they look
            # again only every ten seconds, and a failover needs a replica seen in sync.
            self._wait_replica_in_sync(self.servers[1], timeout)
            for sentinel in self.sentinels:
                sentinel.launch()
            for sentinel in self.sentinels:
                sentinel.wait_ready()
            self.wait_settled(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in [*self.sentinels, *self.servers]:
            service.stop()

    @staticmethod
    def _wait_replica_in_sync(replica: RedisServer, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with admin(replica.port) as client:
                if client.info("replication").get("master_link_status") == "up":
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica did not sync within {timeout:.0f}s")
            time.sleep(0.05)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Until every sentinel sees the others, a master and a synchronised replica."""
        others = len(self.sentinels) - 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = []
                for sentinel in self.sentinels:
                    with admin(sentinel.port) as client:
                        states.append(client.sentinel_master(MASTER_NAME))
                with admin(self.sentinels[0].port) as client:
                    replicas = client.sentinel_slaves(MASTER_NAME)
                if all(
                    int(state["num-other-sentinels"]) >= others
                    and state["is_master"]
                    and not state["is_sdown"]
                    and not state["is_odown"]
                    for state in states
                ) and any(
                    replica.get("master-link-status") == "ok" and not replica["is_sdown"]
                    for replica in replicas
                ):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the sentinels did not settle within {timeout:.0f}s")
            time.sleep(0.1)

    # --- what a test reads -----------------------------------------------------------

    @property
    def sentinel_addrs(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def redis_settings(self) -> dict[str, Any]:
        """The ``redis`` section of a service reaching the master through the sentinels."""
        return {"addrs": self.sentinel_addrs, "mastername": MASTER_NAME}

    def environ(self, prefix: str = "REGISTRY_REDIS_") -> dict[str, str]:
        """The same as ``REGISTRY_REDIS_*`` (or ``TOKENAUTH_REDIS_*``) variables."""
        return {
            prefix + "ADDRS": "[" + ", ".join(self.sentinel_addrs) + "]",
            prefix + "MASTERNAME": MASTER_NAME,
        }

    def master(self) -> RedisServer:
        """The server the sentinels name as master now."""
        for sentinel in self.sentinels:
            port = sentinel.master_port_seen() if sentinel.running else None
            if port is not None:
                return self._server(port)
        raise AssertionError("no sentinel names a master")

    # --- failures --------------------------------------------------------------------

    def failover(self, timeout: float = 30.0) -> RedisServer:
        """``SENTINEL FAILOVER``: the replica is promoted and the old master becomes its
        replica. Returns the new master once every sentinel names it and it is one.

        The sentinels refuse one while another is in progress (``INPROG``) or while they
        have not yet seen a replica in sync (``NOGOODSLAVE``, e.g. just after ``revive``):
        the request is repeated until ``timeout``, so failovers can follow each other
        (back to back here, a second or so each)."""
        deadline = time.monotonic() + timeout
        old = self.master()
        while True:
            try:
                with admin(self.sentinels[0].port) as client:
                    self.failed_at = time.monotonic()
                    client.sentinel_failover(MASTER_NAME)
                break
            except redis.ResponseError as error:
                if not str(error).startswith(("NOGOODSLAVE", "INPROG")):
                    raise
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the sentinels still refuse a failover: {error}"
                    ) from None
                time.sleep(0.2)
        return self.wait_for_new_master(old, max(deadline - time.monotonic(), 1.0))

    def kill_master(self) -> RedisServer:
        """``kill -9`` of the master; returns it (``revive`` restarts it on its port)."""
        old = self.master()
        assert old.process is not None
        old.process.send_signal(signal.SIGKILL)
        self.failed_at = time.monotonic()
        old.process.wait()
        return old

    def revive(self, server: RedisServer) -> None:
        """Restart a killed server on its port; the sentinels make it a replica again."""
        server.start()

    def wait_for_new_master(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Until every running sentinel names a master other than ``old`` and that server
        says it is a master (it takes writes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = {s.master_port_seen() for s in self.sentinels if s.running}
            if len(seen) == 1 and None not in seen and old.port not in seen:
                (port,) = seen
                assert port is not None
                try:
                    with admin(port) as client:
                        role = client.info("replication")["role"]
                    if role == "master":
                        return self._server(port)
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"no new master within {timeout:.0f}s")

    def _server(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise AssertionError(f"the sentinels name 127.0.0.1:{port}, not one of the group")
