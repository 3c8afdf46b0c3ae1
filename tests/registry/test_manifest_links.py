"""A manifest PUT writes its links in one go: the revision link, the referrer's entry
(when the manifest has a subject) and the tag's index and current links are one step
list, one thread job of the filesystem driver (issue 17: each job was a durable step of
its own, waiting for journal commits one after another). Watched with strace on the real
server: all are renamed into place by one thread, in that order, with no wake-up of the
event loop between them (the end of a thread job wakes it). A failing tag step still
leaves nothing of the push behind."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from tests.registry.test_durability import Traced, _start
from tests.support.oci import OCI_CONFIG, OCI_MANIFEST, sha256_digest
from tests.support.syscalls import Call

REPO = "durable/app"  # the repository test_durability's _start serves
CONFIG = b"{}"
IMAGE = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(CONFIG), "size": 2},
        "layers": [],
    }
).encode()


def _referrer(subject: bytes) -> bytes:
    """A manifest naming ``subject`` (an artifact such as a signature)."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(CONFIG), "size": 2},
            "layers": [],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": sha256_digest(subject),
                "size": len(subject),
            },
        }
    ).encode()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Traced]:
    yield from _start(tmp_path, "true")


async def _put(session: aiohttp.ClientSession, url: str, reference: str, body: bytes) -> int:
    async with session.put(
        f"{url}/v2/{REPO}/manifests/{reference}",
        data=body,
        headers={"Content-Type": OCI_MANIFEST},
    ) as response:
        return response.status


async def _push_config(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(
        f"{url}/v2/{REPO}/blobs/uploads/", params={"digest": sha256_digest(CONFIG)}, data=CONFIG
    ) as response:
        assert response.status == 201, await response.text()


def _renamed(calls: Sequence[Call], destination: Path) -> int:
    """Where ``destination`` was renamed into place (the first time)."""
    found = [
        i
        for i, c in enumerate(calls)
        if c.name.startswith("rename") and c.strings[-1:] == (str(destination),)
    ]
    assert found, f"nothing was renamed to {destination}"
    return found[0]


def _loop_wake_ups(calls: Sequence[Call], main_thread: int) -> list[int]:
    """Where a thread woke the event loop: asyncio's self-pipe, one byte sent by the
    thread that finished a job (``call_soon_threadsafe``)."""
    return [
        i
        for i, c in enumerate(calls)
        if c.name in ("sendto", "send") and c.thread != main_thread and c.strings == ("\\0",)
    ]


def assert_one_job(calls: Sequence[Call], main_thread: int, destinations: Sequence[Path]) -> None:
    renames = [_renamed(calls, d) for d in destinations]
    assert renames == sorted(renames), f"not renamed in the order {destinations}"
    assert len({calls[i].thread for i in renames}) == 1, "renamed by more than one thread"
    woken = [i for i in _loop_wake_ups(calls, main_thread) if renames[0] < i < renames[-1]]
    assert woken == [], "the event loop was woken between them: more than one thread job"


async def test_a_manifests_links_are_written_in_one_thread_job(durable: Traced) -> None:
    url = durable.registry.url
    referrer = _referrer(IMAGE)
    async with aiohttp.ClientSession() as session:
        await _push_config(session, url)
        assert await _put(session, url, "latest", IMAGE) == 201
        assert await _put(session, url, "sig", referrer) == 201
    assert durable.registry.process is not None
    main_thread = durable.registry.process.pid
    calls = durable.stop()
    assert _loop_wake_ups(calls, main_thread), "the loop's wake-ups are seen (else no test)"

    repo = durable.root / "docker/registry/v2/repositories" / REPO / "_manifests"
    image = sha256_digest(IMAGE).split(":")[1]
    signature = sha256_digest(referrer).split(":")[1]
    assert_one_job(
        calls,
        main_thread,
        [
            repo / "revisions/sha256" / image / "link",
            repo / "tags/latest/index/sha256" / image / "link",
            repo / "tags/latest/current/link",
        ],
    )
    referrers = durable.root / "docker/registry/v2/repositories" / REPO / "_referrers"
    referrer_entry = next(referrers.rglob(f"{signature}/*"))
    assert_one_job(
        calls,
        main_thread,
        [
            repo / "revisions/sha256" / signature / "link",
            referrer_entry,
            repo / "tags/sig/index/sha256" / signature / "link",
            repo / "tags/sig/current/link",
        ],
    )


async def test_a_failing_tag_step_leaves_nothing_of_the_push(durable: Traced) -> None:
    """The tag's current link cannot be written (its directory's place holds a file):
    the revision, the referrer's entry and the tag's index entry written before it in
    the same step list are all taken back."""
    url = durable.registry.url
    referrer = _referrer(IMAGE)
    signature = sha256_digest(referrer)
    repo = durable.root / "docker/registry/v2/repositories" / REPO / "_manifests"
    async with aiohttp.ClientSession() as session:
        await _push_config(session, url)
        assert await _put(session, url, sha256_digest(IMAGE), IMAGE) == 201
        blocked = repo / "tags/sig/current"
        blocked.parent.mkdir(parents=True)
        blocked.write_bytes(b"not a directory")
        status = await _put(session, url, "sig", referrer)
        assert status >= 500, status
        for reference in ("sig", signature):
            async with session.get(f"{url}/v2/{REPO}/manifests/{reference}") as response:
                assert response.status == 404, reference
        async with session.get(f"{url}/v2/{REPO}/referrers/{sha256_digest(IMAGE)}") as response:
            assert response.status == 200
            assert (await response.json())["manifests"] == []
        async with session.get(f"{url}/v2/{REPO}/tags/list") as response:
            assert (await response.json())["tags"] in (None, [])
    calls = durable.stop()
    # Each was written before the tag's current link failed, then removed.
    signature_hex = signature.split(":")[1]
    index_entry = repo / "tags/sig/index/sha256" / signature_hex / "link"
    _renamed(calls, repo / "revisions/sha256" / signature_hex / "link")
    _renamed(calls, index_entry)
    assert not (repo / "revisions/sha256" / signature_hex).exists()
    assert not (repo / "tags/sig").exists()
    referrers = durable.root / "docker/registry/v2/repositories" / REPO / "_referrers"
    assert list(referrers.rglob(f"{signature_hex}*")) == []
