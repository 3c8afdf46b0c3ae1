"""Scenario 8: another user's login while a flood of guesses hits one account.

tokenauth runs as shipped (bcrypt cost 10), with its verification memory off so every
login of the other user really runs bcrypt. Each round: 300 logins with different wrong
passwords at a fresh account, all at once from a fresh loopback address, while the other
user logs in 5 times in a row from another address. Reported: the latency percentiles
of the other user's logins over all rounds, and how the guesses were answered (the
limit of 5 failures per account must hold however many arrive at once). The reference
registry has no token server: portside's figures only.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections import Counter

import aiohttp

from bench.context import Context
from bench.results import Metric, Target
from bench.scenarios.tokens import SERVICE, start_token_server
from bench.servers import PORTSIDE, REFERENCE
from shared.htpasswd import format_htpasswd_line

GROUP = "8. login flood"
GUESSES = 300
LOGINS_PER_ROUND = 5
OTHER_ADDRESS = "127.0.0.2"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _session(source: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, local_addr=(source, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(120))


async def _guesses(url: str, user: str, source: str) -> Counter[int]:
    async with _session(source) as session:

        async def guess(index: int) -> int:
            async with session.get(url, headers=_basic(user, f"guess-{index}")) as response:
                await response.read()
                return response.status

        return Counter(await asyncio.gather(*(guess(i) for i in range(GUESSES))))


async def _logins(url: str) -> list[float]:
    seconds = []
    async with _session(OTHER_ADDRESS) as session:
        for _ in range(LOGINS_PER_ROUND):
            started = time.perf_counter()
            async with session.get(url, headers=_basic("bob", "bob-password")) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the other user's login answered {response.status}")
            seconds.append(time.perf_counter() - started)
    return seconds


async def run_flood(ctx: Context) -> list[Metric]:
    rounds = max(ctx.plan.rounds * 5, 5)
    users = [format_htpasswd_line(f"target{k}", "target-password") for k in range(rounds)]
    users.append(format_htpasswd_line("bob", "bob-password"))
    tokens = await start_token_server(
        ctx,
        users,
        'acl:\n  - match: {account: "*"}\n    actions: []\n',
        # Without the verification memory every one of bob's logins runs bcrypt.
        "credentialcache:\n  ttl: 0s\n",
    )
    server = tokens.server
    url = f"{server.url}/auth?service={SERVICE}"
    latencies: list[float] = []
    answers: Counter[int] = Counter()
    try:
        for k in range(rounds):
            flood = _guesses(url, f"target{k}", f"127.0.1.{k + 1}")
            counted, seconds = await asyncio.gather(flood, _logins(url))
            answers += counted
            latencies += seconds
    finally:
        await ctx.lab.stop(server)
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    note = (
        f"{rounds} rounds of {GUESSES} parallel guesses at a fresh account; the guesses were "
        + ", ".join(f"{n} x {status}" for status, n in sorted(answers.items()))
    )
    metrics = []
    for key, title, value, target in (
        ("flood_login_median", "other user's login during a flood, median", 0.5, None),
        (
            "flood_login_p99",
            "other user's login during a flood, p99",
            0.99,
            Target("< 1 s", max_value=1.0),
        ),
    ):
        metric = Metric(
            key, title, "s", GROUP, higher_is_better=False, target=target, note=note, plotted=False
        )
        metric.add_value(
            PORTSIDE, percentile(value) if value != 0.5 else statistics.median(latencies)
        )
        metric.unavailable[REFERENCE] = "the reference registry has no token server"
        metrics.append(metric)
    failures = Metric(
        "flood_failures_per_account",
        "guesses answered 401 per flooded account",
        "401s",
        GROUP,
        higher_is_better=False,
        target=Target("<= 5 (ratelimit.accountfailures)", max_value=5.0),
        plotted=False,
    )
    failures.add_value(PORTSIDE, answers[401] / rounds)
    failures.unavailable[REFERENCE] = "the reference registry has no token server"
    return [*metrics, failures]
