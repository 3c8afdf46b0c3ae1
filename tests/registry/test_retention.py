"""Retention policies (``storage.retention``) and ``registry retention``, on stores built
through the registry's API, with push times set by ageing the links' modification times
(the push time retention reads) and pull times recorded by pulls through the app."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from registry.app import create_app
from registry.config import load_config
from registry.keys import STORAGE
from registry.retention_command import evaluate
from registry.storage.retention import RetentionReport
from shared.config import ConfigError
from tests.registry.conftest import ClientFactory, RegistryClient
from tests.registry.helpers import Blob, assert_2xx, put_manifest, send, snapshot
from tests.registry.test_garbage_collect import assert_every_tag_pulls, blob, push_image
from tests.support.oci import OCI_INDEX, OCI_MANIFEST
from tests.support.portside_servers import FILESYSTEM_CONFIG, run_python_module
from tests.support.tools import free_port

DAY = 86400.0
REPOSITORIES = "docker/registry/v2/repositories"


def write_config(tmp_path: Path, retention: str) -> Path:
    root = tmp_path / "registry-data"
    config = tmp_path / "retention.yml"
    base = FILESYSTEM_CONFIG.format(root=root, port=free_port())
    config.write_text(base.replace("  delete:\n", f"  retention:\n{retention}  delete:\n"))
    return config


def set_age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))


def age_tag(root: Path, name: str, tag: str, days: float) -> None:
    set_age(root / REPOSITORIES / name / "_manifests/tags" / tag / "current/link", days)


def age_manifest(root: Path, name: str, body: bytes, days: float) -> None:
    algorithm, encoded = Blob(body).digest.split(":")
    revisions = root / REPOSITORIES / name / "_manifests/revisions"
    set_age(revisions / algorithm / encoded / "link", days)


async def tags_of(client: RegistryClient, name: str) -> list[str]:
    reply = await send(client, "GET", f"/v2/{name}/tags/list")
    assert reply.status == 200, reply
    return sorted(reply.json()["tags"] or [])


async def status_of(client: RegistryClient, name: str, reference: str) -> int:
    accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    return (await send(client, "GET", f"/v2/{name}/manifests/{reference}", headers=accept)).status


def decided(report: RetentionReport) -> dict[str, tuple[str, str]]:
    """``repository:tag`` or ``repository@digest`` → (action, rule)."""
    return {
        f"{d.repository}:{d.tag}" if d.tag else f"{d.repository}@{d.digest}": (d.action, d.rule)
        for d in report.decisions
    }


TAG_RULES = """\
    policies:
      - repositories: ["ci/*"]
        keeptags: ["latest", "v*"]
        keepnewest:
          - tags: ["build-*"]
            count: 2
        deletetags:
          - tags: ["*"]
            olderthan: 720h
"""


async def test_tag_rules_combine(registry: RegistryClient, tmp_path: Path) -> None:
    root = tmp_path / "registry-data"
    ages = {"latest": 100, "v1": 100, "build-1": 100, "build-2": 90, "build-3": 80}
    ages |= {"build-4": 70, "build-5": 1, "fresh": 1, "stale": 40}
    for i, (tag, days) in enumerate(ages.items()):
        await push_image(registry, "ci/app", tag, blob(f"c{i}"), [blob(f"l{i}")])
        age_tag(root, "ci/app", tag, days)
    # Not governed by any policy (the glob's * stays within one component): untouched.
    await push_image(registry, "ci/app/nested", "old", blob("cn"), [blob("ln")])
    age_tag(root, "ci/app/nested", "old", 100)
    config = load_config(write_config(tmp_path, TAG_RULES), {})

    dry = await evaluate(config, dry_run=True)
    assert await tags_of(registry, "ci/app") == sorted(ages), "a dry run deleted tags"
    report = await evaluate(config, dry_run=False)

    assert decided(report) == decided(dry)
    assert decided(report) == {
        "ci/app:build-1": ("delete", "deletetags[0]"),
        "ci/app:build-2": ("delete", "deletetags[0]"),
        "ci/app:build-3": ("delete", "deletetags[0]"),
        "ci/app:stale": ("delete", "deletetags[0]"),
        # Selected by the delete rule, protected by a keep rule.
        "ci/app:latest": ("keep", "keeptags"),
        "ci/app:v1": ("keep", "keeptags"),
        "ci/app:build-4": ("keep", "keepnewest[0]"),
    }
    assert await tags_of(registry, "ci/app") == ["build-4", "build-5", "fresh", "latest", "v1"]
    assert await tags_of(registry, "ci/app/nested") == ["old"]
    # Deleting tags leaves their manifests (no deleteuntaggedolderthan here).
    assert report.deleted and all(d.kind == "tag" for d in report.deleted)
    for d in report.deleted:
        assert await status_of(registry, "ci/app", str(d.digest)) == 200


UNTAGGED_RULES = """\
    policies:
      - repositories: ["**"]
        deletetags:
          - tags: ["old-*"]
            olderthan: 720h
        deleteuntaggedolderthan: 168h
"""


async def test_untagged_manifests_and_referrers(registry: RegistryClient, tmp_path: Path) -> None:
    root = tmp_path / "registry-data"
    name = "a/app"
    # v1 re-pushed: the first v1 image is untagged and old; its signature goes with it
    # although the signature itself is new.
    first = await push_image(registry, name, "v1", blob("c1"), [blob("l1")])
    first_sig = await push_image(registry, name, None, blob("s1"), [], subject=first)
    second = await push_image(registry, name, "v1", blob("c2"), [blob("l2")])
    age_manifest(root, name, first, 30)
    # v2's signature is old and untagged, but its subject stays: it stays.
    v2 = await push_image(registry, name, "v2", blob("c3"), [blob("l3")])
    v2_sig = await push_image(registry, name, None, blob("s3"), [], subject=v2)
    age_manifest(root, name, v2_sig, 30)
    # An index tagged "multi" with old untagged children: they stay with it.
    children = [
        await push_image(registry, name, None, blob(f"cc{i}"), [blob(f"lc{i}")]) for i in (1, 2)
    ]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": Blob(c).digest, "size": len(c)}
                for c in children
            ],
        }
    ).encode()
    assert_2xx(await put_manifest(registry, name, "multi", index, OCI_INDEX))
    for child in children:
        age_manifest(root, name, child, 30)
    # A young untagged manifest stays; an old tag goes and then its old manifest, in the
    # same run, with its signature's signature (a chain of referrers).
    young = await push_image(registry, name, None, blob("cy"), [blob("ly")])
    old = await push_image(registry, name, "old-1", blob("co"), [blob("lo")])
    old_sig = await push_image(registry, name, None, blob("so"), [], subject=old)
    old_sig_sig = await push_image(registry, name, None, blob("sso"), [], subject=old_sig)
    age_tag(root, name, "old-1", 60)
    age_manifest(root, name, old, 60)
    config = load_config(write_config(tmp_path, UNTAGGED_RULES), {})

    before = snapshot(root)
    dry = await evaluate(config, dry_run=True)
    assert snapshot(root) == before, "a dry run changed the store"
    report = await evaluate(config, dry_run=False)
    assert decided(report) == decided(dry)

    def key(body: bytes) -> str:
        return f"{name}@{Blob(body).digest}"

    assert decided(report) == {
        f"{name}:old-1": ("delete", "deletetags[0]"),
        key(first): ("delete", "deleteuntagged"),
        key(old): ("delete", "deleteuntagged"),
        key(first_sig): ("delete", "subject"),
        key(old_sig): ("delete", "subject"),
        key(old_sig_sig): ("delete", "subject"),
    }
    for body in (first, first_sig, old, old_sig, old_sig_sig):
        assert await status_of(registry, name, Blob(body).digest) == 404
    for body in (second, v2, v2_sig, index, *children, young):
        assert await status_of(registry, name, Blob(body).digest) == 200
    referrers = await send(registry, "GET", f"/v2/{name}/referrers/{Blob(v2).digest}")
    assert [m["digest"] for m in referrers.json()["manifests"]] == [Blob(v2_sig).digest]
    referrers = await send(registry, "GET", f"/v2/{name}/referrers/{Blob(first).digest}")
    assert referrers.json()["manifests"] == []
    assert await tags_of(registry, name) == ["multi", "v1", "v2"]


async def test_command_prints_every_item_and_its_rule(
    registry: RegistryClient, tmp_path: Path
) -> None:
    root = tmp_path / "registry-data"
    for tag, days in (("keep-me", 1), ("gone", 100), ("latest", 100)):
        await push_image(registry, "ci/tool", tag, blob(f"c-{tag}"), [blob(f"l-{tag}")])
        age_tag(root, "ci/tool", tag, days)
    config = write_config(tmp_path, TAG_RULES)
    before = snapshot(root)

    document: dict[str, Any] = json.loads(
        run_python_module("registry", "retention", "--dry-run", "--format", "json", str(config))
    )
    table = run_python_module("registry", "retention", "--dry-run", str(config))
    assert snapshot(root) == before, "a dry run changed the store"
    assert document["dryRun"] is True
    rows = {(d["action"], d["tag"], d["rule"]) for d in document["decisions"]}
    assert rows == {("would delete", "gone", "deletetags[0]"), ("keep", "latest", "keeptags")}
    gone = next(d for d in document["decisions"] if d["tag"] == "gone")
    assert gone["repository"] == "ci/tool" and gone["digest"].startswith("sha256:")
    assert gone["pushed"].endswith("Z") and "pushed 100d ago" in gone["reason"]
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["ACTION", "REPOSITORY"]
    assert any(line.startswith("would delete  ci/tool") and "gone" in line for line in lines)
    assert lines[-1] == "would delete 1 tags and 0 manifests in 1 repositories"

    done = run_python_module("registry", "retention", str(config))
    assert done.splitlines()[-1] == "deleted 1 tags and 0 manifests in 1 repositories"
    assert await tags_of(registry, "ci/tool") == ["keep-me", "latest"]


PULL_RULES = """\
    policies:
      - repositories: ["p/*"]
        keeppulledwithin: 24h
        deletetags:
          - olderthan: 720h
"""


async def test_pulled_tags_are_kept(make_registry: ClientFactory, tmp_path: Path) -> None:
    root = tmp_path / "registry-data"
    client = await make_registry()
    for tag in ("pulled", "headed", "idle", "deleted"):
        await push_image(client, "p/app", tag, blob(f"c-{tag}"), [blob(f"l-{tag}")])
    storage = client.app[STORAGE]
    assert await status_of(client, "p/app", "pulled") == 200
    assert (await send(client, "HEAD", "/v2/p/app/manifests/headed")).status == 200
    assert await storage.flush_pulls() == 2
    pulled = root / REPOSITORIES / "p/app/_manifests/tags/pulled/pulled"
    written = pulled.stat().st_mtime_ns
    # Pulled again within the resolution (an hour): nothing is written.
    for _ in range(3):
        assert await status_of(client, "p/app", "pulled") == 200
    assert await storage.flush_pulls() == 0
    assert pulled.stat().st_mtime_ns == written
    # A tag deleted between its pull and the flush is not brought back as a directory.
    assert await status_of(client, "p/app", "deleted") == 200
    await storage.repository("p/app").tags.untag("deleted")
    assert await storage.flush_pulls() == 0
    assert not (root / REPOSITORIES / "p/app/_manifests/tags/deleted").exists()
    # Pulls noted just before shutdown are flushed by it.
    assert await status_of(client, "p/app", "idle") == 200
    await client.close()
    assert (root / REPOSITORIES / "p/app/_manifests/tags/idle/pulled").exists()
    idle = root / REPOSITORIES / "p/app/_manifests/tags/idle/pulled"
    set_age(idle, 3)  # the file's time is not what counts: its content is
    idle.write_text(repr(time.time() - 3 * DAY))
    for tag in ("pulled", "headed", "idle"):
        age_tag(root, "p/app", tag, 100)

    report = await evaluate(load_config(write_config(tmp_path, PULL_RULES), {}), dry_run=False)
    assert decided(report) == {
        "p/app:idle": ("delete", "deletetags[0]"),
        "p/app:pulled": ("keep", "keeppulledwithin"),
        "p/app:headed": ("keep", "keeppulledwithin"),
    }
    assert sorted(os.listdir(root / REPOSITORIES / "p/app/_manifests/tags")) == ["headed", "pulled"]


async def test_reference_registry_serves_a_store_with_pull_times(
    make_registry: ClientFactory, tmp_path: Path
) -> None:
    """Operators switch between portside and Distribution 2.8.2 on one store: the
    ``pulled`` files must not stop the reference from listing and serving tags."""
    client = await make_registry()
    await push_image(client, "r/app", "v1", blob("c-r1"), [blob("l-r1")])
    await push_image(client, "r/app", "v2", blob("c-r2"), [blob("l-r2")])
    assert await status_of(client, "r/app", "v1") == 200
    assert await client.app[STORAGE].flush_pulls() == 1
    await client.close()
    root = tmp_path / "registry-data"
    assert (root / REPOSITORIES / "r/app/_manifests/tags/v1/pulled").exists()
    config = tmp_path / "reference.yml"
    config.write_text(FILESYSTEM_CONFIG.format(root=root, port=free_port()))
    # Lists both tags (asserted inside: every listed tag is pulled, every blob verified).
    await assert_every_tag_pulls(config, "reference", ["r/app"])


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ("    policies:\n      - keeptags: [latest]\n", "policies[0].repositories: must be set"),
        (
            "    policies:\n      - repositories: ['*']\n        keepnewest: [{count: 0}]\n",
            "policies[0].keepnewest[0].count: expected a number from 1",
        ),
        (
            "    policies:\n      - repositories: ['*']\n        deleteuntaggedolderthan: soon\n",
            "policies[0].deleteuntaggedolderthan: expected a duration",
        ),
        ("    pullresolution: 0s\n", "storage.retention.pullresolution: must be positive"),
    ],
)
def test_configuration_errors_name_the_key(tmp_path: Path, retention: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write_config(tmp_path, retention), {})


def test_environment_overrides_reach_policies(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, TAG_RULES),
        {"REGISTRY_STORAGE_RETENTION_POLICIES_0_DELETETAGS_0_OLDERTHAN": "48h"},
    )
    (policy,) = config.storage.retention.policies
    assert policy.deletetags[0].olderthan.total_seconds() == 2 * DAY
    assert policy.keepnewest[0].count == 2


SCHEDULED_RULES = """\
    interval: 1s
    policies:
      - repositories: ["**"]
        keeptags: [keep]
        deletetags:
          - tags: ["*"]
            olderthan: 720h
"""


async def test_the_serving_registry_applies_the_policies_every_interval(
    registry: RegistryClient,
    aiohttp_client: Callable[[web.Application], Awaitable[RegistryClient]],
    tmp_path: Path,
) -> None:
    root = tmp_path / "registry-data"
    for i, tag in enumerate(("keep", "old", "new")):
        await push_image(registry, "sched/app", tag, blob(f"sc{i}"), [blob(f"sl{i}")])
    for tag in ("keep", "old"):
        age_tag(root, "sched/app", tag, 40)
    # A registry serving the same store, configured to apply the policies every second.
    serving = await aiohttp_client(
        create_app(load_config(write_config(tmp_path, SCHEDULED_RULES), {}))
    )
    for _ in range(100):
        if await tags_of(serving, "sched/app") == ["keep", "new"]:
            break
        await asyncio.sleep(0.1)
    assert await tags_of(serving, "sched/app") == ["keep", "new"]


async def test_a_kept_index_keeps_a_child_whose_subject_goes(
    registry: RegistryClient, tmp_path: Path
) -> None:
    """A referrer goes with its subject, except when a kept index names it: the index
    needs it whatever its subject (found by a review: it was deleted, breaking v1)."""
    root = tmp_path / "registry-data"
    name = "b/app"
    subject = await push_image(registry, name, None, blob("subject-c"), [blob("subject-l")])
    child = await push_image(registry, name, None, blob("child-c"), [], subject=subject)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": Blob(child).digest, "size": len(child)}
            ],
        }
    ).encode()
    assert_2xx(await put_manifest(registry, name, "v1", index, OCI_INDEX))
    for body in (subject, child):
        age_manifest(root, name, body, 10)
    config = load_config(write_config(tmp_path, UNTAGGED_RULES), {})

    report = await evaluate(config, dry_run=False)

    deleted = {str(d.digest) for d in report.deleted}
    assert Blob(subject).digest in deleted
    assert Blob(child).digest not in deleted
    assert await status_of(registry, name, Blob(child).digest) == 200


PULLED_RULES = """\
    pullresolution: 1h
    policies:
      - repositories: ["**"]
        keeppulledwithin: 2h
        deletetags:
          - tags: ["*"]
"""


async def test_keep_pulled_within_allows_for_the_recording_lag(
    registry: RegistryClient, tmp_path: Path
) -> None:
    """A stored pull time is rewritten only once it is a resolution old, so it can lag
    the last pull by up to that (plus a flush): a tag last recorded 2h50m ago may have
    been pulled 1h55m ago, within keeppulledwithin: 2h, and must stay."""
    root = tmp_path / "registry-data"
    for i, tag in enumerate(("lagging", "forgotten")):
        await push_image(registry, "p/app", tag, blob(f"pc{i}"), [blob(f"pl{i}")])
        age_tag(root, "p/app", tag, 3)
    tags = root / REPOSITORIES / "p/app/_manifests/tags"
    (tags / "lagging/pulled").write_text(repr(time.time() - (2 * 3600 + 50 * 60)))
    (tags / "forgotten/pulled").write_text(repr(time.time() - 4 * 3600))
    config = load_config(write_config(tmp_path, PULLED_RULES), {})

    await evaluate(config, dry_run=False)

    assert await tags_of(registry, "p/app") == ["lagging"]
