"""Concurrent and timed logins over real sockets, for the login-limiting tests of both
services: a flood of guesses from one address, logins from another loopback address, and
the time a refusal takes."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

OTHER_ADDRESS = "127.0.0.2"  # any 127.0.0.0/8 address reaches a loopback server on Linux


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def session(source: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A session without a connection limit (every request really in flight at once),
    connecting from ``source``."""
    connector = aiohttp.TCPConnector(limit=0, local_addr=(source, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(60))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any  # the JSON body


async def get(
    client: aiohttp.ClientSession, url: URL, auth: tuple[str, str], params: Mapping[str, str]
) -> Answer:
    """GET with Basic credentials."""
    async with client.get(url, params=params, headers=basic(*auth)) as response:
        return Answer(response.status, response.headers, await response.json())


async def parallel_logins(
    url: URL, logins: list[tuple[str, str]], params: Mapping[str, str] | None = None
) -> list[Answer]:
    """All ``logins`` (user, password) at once, each on its own connection."""
    async with session() as client:
        return await asyncio.gather(*(get(client, url, auth, params or {}) for auth in logins))


def guesses(user: str, count: int) -> list[tuple[str, str]]:
    """``count`` logins as ``user``, each with a different wrong password."""
    return [(user, f"guess-{i}") for i in range(count)]


async def timed_logins(
    url: URL,
    auth: tuple[str, str],
    count: int,
    params: Mapping[str, str] | None = None,
    source: str = "127.0.0.1",
) -> list[tuple[int, float]]:
    """``count`` logins one after the other from ``source``: (status, seconds) of each."""
    results = []
    async with session(source) as client:
        for _ in range(count):
            started = time.perf_counter()
            answer = await get(client, url, auth, params or {})
            results.append((answer.status, time.perf_counter() - started))
    return results


async def median_refusal(
    url: URL, auth: tuple[str, str], count: int, params: Mapping[str, str] | None = None
) -> float:
    """The median time of ``count`` refused logins (asserting they are refused with 401)."""
    results = await timed_logins(url, auth, count, params)
    assert {status for status, _ in results} == {401}, results
    return statistics.median(seconds for _, seconds in results)
