"""The chaos driver: every few seconds it SIGKILLs a random registry or tokenauth replica
and starts it again on the same port, or restarts Redis, or (when the topology has
replicas) fails Redis over. One fault at a time: the next comes only once the previous
one's victim answers again, so the deployment always has a quorum to fail over to.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.support.chaos_deployment import FailoverTopology, SoakDeployment

log = logging.getLogger("bench.soak")

# Faults come in decks: every kind once in a random order (a failover only where the
# topology has one), then a registry once more; even a short soak sees every kind.
EXTRA = ("registry",)


@dataclass
class ChaosLog:
    faults: Counter[str] = field(default_factory=Counter)
    recovery_seconds: dict[str, list[float]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def record(self, fault: str, victim: str, seconds: float) -> None:
        self.faults[fault] += 1
        self.recovery_seconds.setdefault(fault, []).append(seconds)
        self.events.append(f"{fault} {victim}: back in {seconds:.1f}s")


class ChaosDriver:
    def __init__(
        self,
        deployment: SoakDeployment,
        interval: float,
        downtime: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.deployment = deployment
        self.interval = interval
        self.downtime = downtime
        self.rng = rng or random.Random()
        self.log = ChaosLog()
        # Set once every kind of fault has been caused and recovered from: a soak's load
        # lasts at least until then, however long a slow recovery (a refused failover
        # waiting for the replica to resynchronise, 30 s and more) held the deck up.
        self.every_kind_caused = asyncio.Event()

    def faults(self) -> list[str]:
        kinds = ["registry", "tokenauth", "redis-restart"]
        if isinstance(self.deployment.redis, FailoverTopology):
            kinds.append("redis-failover")
        return kinds

    async def run(self, stop: asyncio.Event) -> None:
        """Cause faults until ``stop`` is set (the current one is always recovered)."""
        deck: list[str] = []
        while not stop.is_set():
            pause = self.interval * self.rng.uniform(0.5, 1.5)
            try:
                await asyncio.wait_for(stop.wait(), pause)
                return
            except TimeoutError:
                pass
            if not deck:
                kinds = self.faults()
                self.rng.shuffle(kinds)
                deck = [*EXTRA, *kinds]  # dealt from the end: every kind first
            await self.cause(deck.pop())
            if set(self.log.faults) >= set(self.faults()):
                self.every_kind_caused.set()

    async def cause(self, fault: str) -> None:
        started = time.monotonic()
        if fault in self.deployment.killable:
            victims = self.deployment.killable[fault]
            victim = self.rng.choice(victims)
            name = f"{fault} :{victim.port}"
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(self.downtime)
            await asyncio.to_thread(victim.start)
        elif fault == "redis-restart":
            name = "redis"
            await asyncio.to_thread(self.deployment.redis.restart)
        else:
            topology = self.deployment.redis
            assert isinstance(topology, FailoverTopology)
            name = "redis master"
            await asyncio.to_thread(topology.failover)
        seconds = time.monotonic() - started
        log.info("chaos: %s %s, back in %.1fs", fault, name, seconds)
        self.log.record(fault, name, seconds)
