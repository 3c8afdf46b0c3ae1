"""Events still undelivered when ``registry serve`` stops cleanly are sent by the next
process: none lost, none twice, in order (real processes, a real SIGTERM)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from registry.notifications.spool import Spool
from tests.support.event_receiver import EventReceiver, notifications_env
from tests.support.portside_servers import ServerProcess, filesystem_registry


@pytest.fixture
async def receiver() -> AsyncIterator[EventReceiver]:
    events = EventReceiver()
    yield events
    await events.stop()


async def push_blob(session: aiohttp.ClientSession, base: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.post(f"{base}/v2/{name}/blobs/uploads/") as started:
        assert started.status == 202, await started.text()
        location = started.headers["Location"]
    url = location if location.startswith("http") else base + location
    async with session.put(url, params={"digest": digest}, data=data) as finished:
        assert finished.status == 201, await finished.text()
    return digest


def start(tmp_path: Path, receiver: EventReceiver, workers: int) -> ServerProcess:
    server = filesystem_registry(
        tmp_path,
        REGISTRY_NOTIFICATIONS=notifications_env(url=receiver.url, threshold=1, backoff="100ms"),
        PORTSIDE_WORKERS=str(workers),
    )
    server.start()
    return server


@pytest.mark.parametrize(("workers", "workers_after"), [(1, 1), (2, 2), (2, 1)])
async def test_a_clean_restart_loses_no_pending_event(
    tmp_path: Path, receiver: EventReceiver, workers: int, workers_after: int
) -> None:
    """Each worker saves its own queue (``test.<worker>.jsonl``) and the worker with the
    same index sends it after the restart (with fewer workers, ``index % workers``); one
    process keeps the order of all events."""
    first = start(tmp_path, receiver, workers)
    pushed: list[tuple[str, str]] = []
    try:
        # A connection per request: with two workers, the kernel spreads them over both.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for index in range(4):
                for name in ("first/repo", "second/repo"):
                    data = f"{name} blob {index}".encode() * 50
                    pushed.append((name, await push_blob(session, first.url, name, data)))
    finally:
        assert first.stop() == 0, first.log()
    directory = tmp_path / "data" / "_notifications"
    saved = sorted(directory.iterdir())
    assert {path.name for path in saved} <= {f"test.{i}.jsonl" for i in range(workers)}
    assert sum(len(path.read_bytes().splitlines()) for path in saved) == 8, first.log()

    second = start(tmp_path, receiver, workers_after)
    try:
        await receiver.start()
        events = await receiver.wait_for(8)
        await asyncio.sleep(0.5)  # anything sent twice would arrive by now
        assert len(receiver.events) == 8
        received = [(e["target"]["repository"], e["target"]["digest"]) for e in events]
        if workers == 1:
            assert received == pushed
        else:  # in order within each worker's queue; the workers' queues interleave
            assert sorted(received) == sorted(pushed)
    finally:
        assert second.stop() == 0, second.log()
    assert list(directory.iterdir()) == []  # taken at start, nothing left to save at stop


def test_files_of_workers_that_are_gone_go_to_the_remaining_ones(tmp_path: Path) -> None:
    for index in range(3):
        Spool(tmp_path, index, 3).save("test", [{"id": f"event-{index}"}])
    assert [e["id"] for e in Spool(tmp_path, 1, 2).take("test", 10)] == ["event-1"]
    assert [e["id"] for e in Spool(tmp_path, 0, 2).take("test", 10)] == ["event-0", "event-2"]
    assert list(tmp_path.iterdir()) == []
