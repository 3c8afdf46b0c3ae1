"""``garbage-collect --delete-untagged``: which untagged manifests a collection deletes.

A manifest no tag points at is kept all the same when a kept index names it, when its
subject is kept (signatures, SBOMs and attestations live and die with their subject),
and, online, when it was referenced within the grace period: pushed, tagged, named by
an index or a referrer being pushed, or told to exist by a HEAD (its content blob's
``lastref``, docs/online-gc.md "Untagged manifests"). Keeping one may keep others (its
children, its referrers), so the choice is settled to a fixed point, once before the
run condemns and again after, with the manifests its re-read spared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from registry.oci.digest import Digest
from registry.storage.registry import Repository


@dataclass(frozen=True, slots=True)
class Deletion:
    """One manifest that collection deletes, with the tags whose history names it
    (Distribution removes those index entries, so no tag history names a gone manifest)."""

    repository: str
    digest: Digest
    tags: tuple[str, ...]
    subject: Digest | None


@dataclass
class ReadRepository:
    """What a collection read of one repository."""

    view: Repository
    revisions: set[Digest]
    tags: list[str]
    tags_of: dict[Digest, list[str]]  # digest -> tags currently pointing at it
    history_of: dict[Digest, list[str]]  # digest -> tags whose history names it
    layers: list[Digest] = field(default_factory=list)


Key = tuple[str, Digest]  # repository name, manifest digest
# Marks a kept manifest and everything it references (the collector's).
Mark = Callable[[ReadRepository, Digest], Awaitable[None]]


class Untagged:
    """The untagged manifests of one run, and their subjects."""

    def __init__(self) -> None:
        self.candidates: dict[Key, ReadRepository] = {}
        self.subjects: dict[Key, Digest | None] = {}

    def add(self, repository: ReadRepository, digest: Digest, subject: Digest | None) -> None:
        key = (repository.view.name, digest)
        self.candidates[key] = repository
        self.subjects[key] = subject

    @property
    def digests(self) -> set[Digest]:
        return {digest for _, digest in self.candidates}

    async def settle(self, keep: set[Digest], marked: set[Digest], mark: Mark) -> None:
        """Keep (``mark``) every candidate whose digest is in ``keep`` or ``marked``, or
        whose subject is a kept revision of its repository, until nothing more is kept;
        the rest stay candidates."""
        changed = True
        while changed:
            changed = False
            for key, repository in list(self.candidates.items()):
                name, digest = key
                subject = self.subjects[key]
                kept_subject = (
                    subject is not None
                    and subject in repository.revisions
                    and (name, subject) not in self.candidates
                )
                if digest in keep or digest in marked or kept_subject:
                    del self.candidates[key]
                    await mark(repository, digest)
                    changed = True

    def deletions(self) -> list[Deletion]:
        return [
            Deletion(name, digest, tuple(repository.history_of.get(digest, ())), self.subjects[key])
            for key, repository in sorted(self.candidates.items(), key=_by_name_digest)
            for name, digest in (key,)
        ]


def _by_name_digest(item: tuple[Key, ReadRepository]) -> tuple[str, str]:
    return item[0][0], str(item[0][1])
