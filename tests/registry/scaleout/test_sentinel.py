"""The registry's Redis behind Sentinel, with real processes: ``registry serve`` caching
blob descriptors in the master that three ``redis-sentinel`` name. A multi-layer push
goes on while the master fails over (``SENTINEL FAILOVER``, then ``kill -9``): every
request succeeds, the image pulls byte for byte and the cache is written to the new
master within a bounded window. With Redis entirely down, pushes and pulls go on, the
health check and a metric say so, and the log says so once."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.registry.test_health import WAIT, get, serving, wait_for
from tests.support.backing_services import RedisServer
from tests.support.metrics import scrape
from tests.support.oci import OCI_MANIFEST, Image, make_image
from tests.support.redis_sentinel import RedisSentinelGroup, admin
from tests.support.upstreams import push_image

NAME = "team/app"
LAYERS = 24
HELD_BACK = 3  # layers pushed only once the failover is over: the cache must work again
PACE = 0.1  # seconds between layers while the failover runs
WINDOW_BOUND = 20.0  # generous: two cores shared with other test runs


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[RedisSentinelGroup]:
    group = RedisSentinelGroup(tmp_path / "sentinels")
    group.start()
    yield group
    group.stop()


@dataclass
class Failure:
    """A failure run in a thread (the group's calls block) while the push goes on."""

    act: Callable[[], RedisServer]
    new_master: RedisServer | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.new_master = self.act()
        except BaseException as error:  # handed to the test: a thread cannot raise
            self.error = error
        finally:
            self.done.set()


def cached(group: RedisSentinelGroup, digest: str) -> bool:
    """Whether a running server of the group holds the blob's descriptor now."""
    for server in group.servers:
        if server.running:
            try:
                with admin(server.port) as client:
                    if client.exists(f"blobs::{digest}"):
                        return True
            except redis.RedisError:
                pass  # being restarted or demoted
    return False


async def push_blob(session: aiohttp.ClientSession, base: str, digest: str, data: bytes) -> float:
    """Push one blob as a client does (HEAD, then POST and PUT), then HEAD it again: the
    HEAD that fills the cache. Every request must succeed. When that HEAD was answered."""
    async with session.head(f"{base}/v2/{NAME}/blobs/{digest}") as head:
        assert head.status == 404, head.status
    async with session.post(f"{base}/v2/{NAME}/blobs/uploads/") as started:
        assert started.status == 202, await started.text()
        location = started.headers["Location"]
    if location.startswith("/"):
        location = base + location
    async with session.put(location, params={"digest": digest}, data=io.BytesIO(data)) as put:
        assert put.status == 201, await put.text()
    async with session.head(f"{base}/v2/{NAME}/blobs/{digest}") as head:
        assert head.status == 200, head.status
    return time.monotonic()


async def push_through(
    session: aiohttp.ClientSession,
    base: str,
    image: Image,
    failure: Failure,
    group: RedisSentinelGroup,
) -> list[tuple[float, bool]]:
    """Push ``image`` layer by layer, starting ``failure`` after the third layer; the last
    layers wait for it to end. If none of them reached Redis, further blobs (not in the
    image) are pushed, paced, until one does or ``WINDOW_BOUND`` has passed since the
    failure: on a loaded machine the registry may find the new master only after the
    held-back layers, and the window, not their number, is what is bounded. Returns, for
    each blob pushed once the failure began, when its HEAD (which fills the cache) was
    answered and whether its descriptor was in Redis right after (later reads fill the
    cache again: only a look at once tells whether that write went through)."""
    acknowledged: list[tuple[float, bool]] = []
    thread = threading.Thread(target=failure.run, daemon=True)  # never outlives a failed run
    for index, (digest, data) in enumerate(image.blobs.items()):
        if index == 3:
            thread.start()
        if index == len(image.blobs) - HELD_BACK:
            await asyncio.to_thread(failure.done.wait, 60)
        at = await push_blob(session, base, digest, data)
        if thread.ident is not None:
            acknowledged.append((at, await asyncio.to_thread(cached, group, digest)))
        if thread.is_alive():
            await asyncio.sleep(PACE)
    thread.join(60)
    assert failure.error is None, failure.error
    probe = 0
    while not any(at >= group.failed_at and was for at, was in acknowledged):
        if time.monotonic() - group.failed_at > WINDOW_BOUND:
            break  # cache_window reports it
        data = f"probe {probe} after the failure".encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        at = await push_blob(session, base, digest, data)
        acknowledged.append((at, await asyncio.to_thread(cached, group, digest)))
        probe += 1
        await asyncio.sleep(PACE)
    async with session.put(
        f"{base}/v2/{NAME}/manifests/latest",
        data=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    ) as put:
        assert put.status == 201, await put.text()
    return acknowledged


async def assert_pulls_byte_for_byte(
    session: aiohttp.ClientSession, base: str, image: Image
) -> None:
    headers = {"Accept": OCI_MANIFEST}
    async with session.get(f"{base}/v2/{NAME}/manifests/latest", headers=headers) as got:
        assert got.status == 200 and await got.read() == image.manifest
    for digest, data in image.blobs.items():
        async with session.get(f"{base}/v2/{NAME}/blobs/{digest}") as got:
            assert got.status == 200 and await got.read() == data, digest


def cache_window(acknowledged: list[tuple[float, bool]], since: float) -> float:
    """Seconds from ``since`` to the first blob acknowledged after it whose descriptor was
    in Redis at once (the registry's first successful cache write after the failure)."""
    for at, was_cached in acknowledged:
        if at >= since and was_cached:
            return at - since
    raise AssertionError("no cache write reached Redis after the failure")


async def push_while(
    tmp_path: Path, group: RedisSentinelGroup, act: Callable[[], RedisServer], seed: str
) -> tuple[float, str]:
    """Push an image while ``act`` fails the master over; pull it back. The window from
    the failure to the first cache write that went through, and the registry's log."""
    image = make_image(layer_count=LAYERS, layer_size=16 * 1024, seed=seed)
    old_master = group.master()
    failure = Failure(act)
    with serving(tmp_path, REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR="redis", **group.environ()) as (
        registry,
        _,
    ):
        async with aiohttp.ClientSession() as session:
            acknowledged = await push_through(session, registry.url, image, failure, group)
            await assert_pulls_byte_for_byte(session, registry.url, image)
        log = registry.log()
    assert failure.new_master is not None and failure.new_master is not old_master
    assert "Traceback" not in log
    return cache_window(acknowledged, group.failed_at), log


async def test_a_push_goes_on_through_sentinel_failover(
    tmp_path: Path, sentinel_group: RedisSentinelGroup
) -> None:
    window, log = await push_while(tmp_path, sentinel_group, sentinel_group.failover, "failover")
    print(f"SENTINEL FAILOVER: first cache write after {window:.2f}s")
    assert window < WINDOW_BOUND
    # Retried on the new master, the commands in flight mostly never fail; if some did,
    # the outage is logged once, and its end once.
    assert log.count("does not answer") == log.count("answers again") <= 1, log


async def test_a_push_goes_on_through_kill_9_of_the_master(
    tmp_path: Path, sentinel_group: RedisSentinelGroup
) -> None:
    def kill() -> RedisServer:
        return sentinel_group.wait_for_new_master(sentinel_group.kill_master())

    window, log = await push_while(tmp_path, sentinel_group, kill, "kill")
    print(f"kill -9 of the master: first cache write after {window:.2f}s")
    assert window < WINDOW_BOUND
    # The outage is logged once, and its end once.
    assert log.count("does not answer") == 1, log
    assert log.count("answers again") == 1, log


async def test_with_redis_down_pushes_and_pulls_go_on_and_say_so_once(
    tmp_path: Path, sentinel_group: RedisSentinelGroup
) -> None:
    debug_settings = {
        "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
        # Each check is bounded by its interval: room for a loaded machine.
        "REGISTRY_HEALTH_REDIS_INTERVAL": "1s",
    }
    with serving(
        tmp_path,
        REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR="redis",
        **sentinel_group.environ(),
        **debug_settings,
    ) as (registry, debug):
        assert wait_for(lambda: get(debug + "/debug/health"), 200) == {}
        async with aiohttp.ClientSession() as session:
            before = make_image(layer_count=2, seed="before")
            await push_image(session, registry.url, NAME, "before", before)
            assert scrape(debug + "/metrics").value("registry_storage_cache_errors_total") == 0
            sentinel_group.stop()  # the master, the replica and every sentinel
            # Several pushes and pulls, longer than the cache's one-second back-off.
            deadline = time.monotonic() + 2.5
            round_ = 0
            while time.monotonic() < deadline or round_ < 2:
                image = make_image(layer_count=3, seed=f"down-{round_}")
                await push_image(session, registry.url, NAME, "latest", image)
                await assert_pulls_byte_for_byte(session, registry.url, image)
                round_ += 1
            async with session.get(
                f"{registry.url}/v2/{NAME}/manifests/before", headers={"Accept": OCI_MANIFEST}
            ) as got:
                assert got.status == 200 and await got.read() == before.manifest
        # Until a check has run wholly after the stop (one under way then may time out).
        deadline = time.monotonic() + WAIT
        while "master portside of sentinels 127.0.0.1:" not in str(
            failing := wait_for(lambda: get(debug + "/debug/health"), 503)
        ):
            assert time.monotonic() < deadline, failing
            await asyncio.sleep(0.1)
        assert list(failing) == ["redis"]
        assert scrape(debug + "/metrics").value("registry_storage_cache_errors_total") > 0
        log = registry.log()
    assert log.count("does not answer") == 1, log
    assert "Traceback" not in log
