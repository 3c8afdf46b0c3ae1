"""Retention policies: which tags and manifests of each repository go, and by which rule.

Each repository is governed by the first policy whose ``repositories`` globs match its
name (none: nothing of it is touched). Within a policy:

- a tag goes when a delete rule (``deletetags[i]``: the tag matches its patterns and was
  pushed longer ago than its ``olderthan``) selects it and no keep rule protects it
  (``keeptags``: it matches a pattern; ``keepnewest[i]``: it is one of the ``count``
  most recently pushed tags matching the patterns; ``keeppulledwithin``: it was pulled
  that recently);
- a manifest goes when, once those tags are gone, no tag points at it, its revision was
  pushed longer ago than ``deleteuntaggedolderthan``, no kept manifest (an index) names
  it and its subject, if any, stays (``deleteuntagged``);
- a referrer (a manifest with a ``subject``: a signature, an SBOM, an attestation) goes
  with its subject (``subject``), unless a kept tag points at it.

Deletion goes through the facade (``tags.untag``, ``manifests.delete``), so it is safe
while registries serve the store; each item is checked again just before it is deleted
and left alone if it changed meanwhile (re-pushed, re-tagged). Space is reclaimed by
``garbage-collect`` afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from registry.oci.digest import Digest
from registry.storage.catalog import REPOSITORY_MARKERS, repository_names
from registry.storage.errors import BlobUnknown, ManifestUnknown, NameUnknown, PathNotFound
from registry.storage.references import UnreadableManifest, references_of
from registry.storage.registry import Registry, Repository

log = logging.getLogger("registry.retention")


@dataclass(frozen=True, slots=True)
class NewestRule:
    """``keepnewest``: keep the ``count`` most recently pushed tags matching ``tags``."""

    tags: tuple[str, ...]
    count: int


@dataclass(frozen=True, slots=True)
class DeleteTagsRule:
    """``deletetags``: select tags matching ``tags`` pushed more than ``older_than`` ago."""

    tags: tuple[str, ...]
    older_than: float  # seconds


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    repositories: tuple[str, ...]
    keep_tags: tuple[str, ...] = ()
    keep_newest: tuple[NewestRule, ...] = ()
    keep_pulled_within: float | None = None  # seconds
    delete_tags: tuple[DeleteTagsRule, ...] = ()
    delete_untagged_older_than: float | None = None  # seconds
    _names: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_names",
            re.compile("|".join(f"(?:{repository_glob(p)})" for p in self.repositories)),
        )

    def governs(self, name: str) -> bool:
        return bool(self.repositories) and self._names.fullmatch(name) is not None


def repository_glob(pattern: str) -> str:
    """A repository glob as a regular expression: ``*`` and ``?`` stay within one path
    component, ``**`` crosses them (``team/**`` matches ``team/a`` and ``team/a/b``), and
    a whole ``**/`` component also matches no component at all, as in gitignore
    (``a/**/b`` matches ``a/b``, ``**/cache`` matches ``cache``)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def tag_matches(tag: str, patterns: tuple[str, ...]) -> bool:
    """Shell-style tag patterns (``v*``, ``release-[0-9]*``), case-sensitive as tags are."""
    return any(fnmatch.fnmatchcase(tag, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Decision:
    """One tag or manifest that goes (``action`` "delete") or that a delete rule selected
    but a keep rule protects ("keep"), with the rule that decided and why."""

    action: str
    repository: str
    kind: str  # "tag" or "manifest"
    tag: str | None
    digest: Digest
    rule: str
    reason: str
    pushed: float | None


@dataclass
class RetentionReport:
    repositories: int = 0
    decisions: list[Decision] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # changed between evaluation and delete

    @property
    def deleted(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "delete"]


def ago(seconds: float) -> str:
    """``3d 4h``, ``5h 2m``, ``40s``: an age as a person reads it."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@dataclass(frozen=True, slots=True)
class _Tag:
    name: str
    digest: Digest
    pushed: float
    pulled: float | None


class RetentionRun:
    """Evaluates ``policies`` over every repository of ``registry``; deletes unless
    ``dry_run``. ``emit`` receives each decision as it is made."""

    def __init__(
        self,
        registry: Registry,
        policies: tuple[RetentionPolicy, ...],
        *,
        dry_run: bool,
        now: float | None = None,
        emit: Callable[[Decision], None] = lambda decision: None,
    ) -> None:
        self.registry = registry
        self.policies = policies
        self.dry_run = dry_run
        self.now = time.time() if now is None else now
        self.emit = emit
        self.report = RetentionReport()

    async def run(self) -> RetentionReport:
        names = [n async for n in repository_names(self.registry.driver, REPOSITORY_MARKERS)]
        for name in sorted(names):
            policy = next((p for p in self.policies if p.governs(name)), None)
            if policy is None:
                continue
            self.report.repositories += 1
            await self._apply(self.registry.repository(name), policy)
        return self.report

    def _decide(self, decision: Decision) -> None:
        self.report.decisions.append(decision)
        self.emit(decision)

    async def _apply(self, view: Repository, policy: RetentionPolicy) -> None:
        tags = await self._read_tags(view, policy)
        gone_tags = self._judge_tags(view.name, policy, tags)
        kept_digests = {t.digest for t in tags if t.name not in gone_tags}
        gone_manifests = await self._judge_manifests(view, policy, kept_digests)
        if self.dry_run:
            return
        for tag in tags:
            if tag.name in gone_tags:
                await self._untag(view, tag)
        # Referrers before their subjects: an interrupted run leaves no dangling referrer.
        for digest, pushed in reversed(gone_manifests):
            await self._delete_manifest(view, digest, pushed)

    async def _read_tags(self, view: Repository, policy: RetentionPolicy) -> list[_Tag]:
        try:
            names = list(await view.tags.all())
        except NameUnknown:
            return []
        found = []
        for name in names:
            try:
                digest = await view.tags.resolve(name)
                pushed = await view.tags.pushed_at(name)
            except ManifestUnknown:
                continue  # points nowhere: no rule's business
            pulled = await view.tags.pulled_at(name) if policy.keep_pulled_within else None
            found.append(_Tag(name, digest, pushed, pulled))
        return found

    def _judge_tags(self, repository: str, policy: RetentionPolicy, tags: list[_Tag]) -> set[str]:
        protected: dict[str, str] = {}
        for tag in tags:
            if tag_matches(tag.name, policy.keep_tags):
                protected.setdefault(tag.name, "keeptags")
        for i, newest in enumerate(policy.keep_newest):
            matching = [t for t in tags if tag_matches(t.name, newest.tags)]
            matching.sort(key=lambda t: (-t.pushed, t.name))
            for tag in matching[: newest.count]:
                protected.setdefault(tag.name, f"keepnewest[{i}]")
        if policy.keep_pulled_within:
            for tag in tags:
                if tag.pulled is not None and self.now - tag.pulled <= policy.keep_pulled_within:
                    protected.setdefault(tag.name, "keeppulledwithin")
        gone: set[str] = set()
        for tag in tags:
            age = self.now - tag.pushed
            for i, delete in enumerate(policy.delete_tags):
                if not (tag_matches(tag.name, delete.tags) and age > delete.older_than):
                    continue
                selected = f"deletetags[{i}]: pushed {ago(age)} ago, over {ago(delete.older_than)}"
                keeper = protected.get(tag.name)
                if keeper is None:
                    gone.add(tag.name)
                    rule, reason, action = f"deletetags[{i}]", selected, "delete"
                else:
                    rule, reason, action = (
                        keeper,
                        f"{selected}; {_why(keeper, tag, self.now)}",
                        "keep",
                    )
                self._decide(
                    Decision(
                        action, repository, "tag", tag.name, tag.digest, rule, reason, tag.pushed
                    )
                )
                break
        return gone

    async def _judge_manifests(
        self, view: Repository, policy: RetentionPolicy, tagged: set[Digest]
    ) -> list[tuple[Digest, float | None]]:
        """The manifests that go, subjects before their referrers, each with the push
        time that decided (checked again before deletion) or None (a referrer)."""
        if policy.delete_untagged_older_than is None:
            return []
        tagged = set(tagged)
        revisions = {d async for d in view.blobs.revisions.all()}
        children: dict[Digest, frozenset[Digest]] = {}
        subject_of: dict[Digest, Digest] = {}
        referrers_of: dict[Digest, list[Digest]] = {}
        pushed: dict[Digest, float] = {}
        for digest in sorted(revisions, key=str):
            try:
                pushed[digest] = await view.blobs.revisions.modified(digest)
                references = references_of(await self.registry.blob_store.get(digest))
            except (PathNotFound, BlobUnknown, UnreadableManifest):
                # Unreadable: what it names (an index's children) is unknown, so no
                # untagged manifest of this repository can be known to be unneeded.
                log.warning(
                    "%s: manifest %s is unreadable; no untagged manifest of the repository "
                    "is deleted",
                    view.name,
                    digest,
                )
                return []
            children[digest] = references.manifests
            if references.subject is not None:
                subject_of[digest] = references.subject
                referrers_of.setdefault(references.subject, []).append(digest)
        limit = policy.delete_untagged_older_than
        candidates = {
            d for d in revisions if d not in tagged and self.now - pushed.get(d, self.now) > limit
        }
        # Kept manifests keep the children they name and the referrers naming them.
        queue = [d for d in revisions if d not in candidates]
        named_by_kept: set[Digest] = set()  # children of kept manifests: never deleted
        while queue:
            kept = queue.pop()
            named_by_kept.update(children.get(kept, ()))
            for other in (*children.get(kept, ()), *referrers_of.get(kept, ())):
                if other in candidates:
                    candidates.discard(other)
                    queue.append(other)
        gone: list[tuple[Digest, float | None]] = []
        for digest in sorted(candidates, key=str):
            gone.append((digest, pushed[digest]))
            self._decide(
                Decision(
                    "delete",
                    view.name,
                    "manifest",
                    None,
                    digest,
                    "deleteuntagged",
                    f"untagged, pushed {ago(self.now - pushed[digest])} ago, over {ago(limit)}",
                    pushed[digest],
                )
            )
        # Referrers go with their subject (unless a kept tag points at them).
        deleted = set(candidates)
        queue = sorted(candidates, key=str)
        while queue:
            subject = queue.pop(0)
            for referrer in sorted(referrers_of.get(subject, ()), key=str):
                if referrer in deleted or referrer in tagged or referrer in named_by_kept:
                    continue  # (an index that stays still needs it, whatever its subject)
                deleted.add(referrer)
                queue.append(referrer)
                gone.append((referrer, None))
                self._decide(
                    Decision(
                        "delete",
                        view.name,
                        "manifest",
                        None,
                        referrer,
                        "subject",
                        f"a referrer of {subject}, which goes",
                        pushed.get(referrer),
                    )
                )
        return gone

    async def _untag(self, view: Repository, tag: _Tag) -> None:
        try:
            unchanged = (
                await view.tags.resolve(tag.name) == tag.digest
                and await view.tags.pushed_at(tag.name) == tag.pushed
            )
        except ManifestUnknown:
            return  # already gone
        if not unchanged:
            self.report.skipped.append(f"{view.name}:{tag.name} (pushed again meanwhile)")
            return
        with contextlib.suppress(ManifestUnknown):
            await view.tags.untag(tag.name)

    async def _delete_manifest(
        self, view: Repository, digest: Digest, pushed: float | None
    ) -> None:
        try:
            retagged = await view.tags.pointing_at(digest)
            repushed = pushed is not None and await view.blobs.revisions.modified(digest) != pushed
        except PathNotFound:
            return  # already gone
        if retagged or repushed:
            self.report.skipped.append(f"{view.name}@{digest} (tagged or pushed again meanwhile)")
            return
        with contextlib.suppress(ManifestUnknown):
            await view.manifests.delete(digest)


def _why(rule: str, tag: _Tag, now: float) -> str:
    if rule == "keeppulledwithin" and tag.pulled is not None:
        return f"kept: pulled {ago(now - tag.pulled)} ago"
    if rule == "keeptags":
        return "kept: matches a keeptags pattern"
    return "kept: among the newest of its pattern"


async def apply_periodically(
    registry: Registry, policies: tuple[RetentionPolicy, ...], interval: float
) -> None:
    """Apply ``policies`` every ``interval`` seconds, until cancelled; a failed run is
    logged and tried again at the next interval."""
    while True:
        await asyncio.sleep(max(interval, 1.0))
        try:
            report = await RetentionRun(registry, policies, dry_run=False).run()
        except Exception:
            log.exception("applying the retention policies failed; will retry")
            continue
        deleted = report.deleted
        if deleted:
            tags = sum(1 for d in deleted if d.kind == "tag")
            log.info(
                "retention deleted %d tags and %d manifests in %d repositories",
                tags,
                len(deleted) - tags,
                report.repositories,
            )
