"""What the interface's pages show, read through the storage facade.

Each function reads only what its page shows: a page of catalog names, a page of tags
and their manifests (by digest, so browsing never counts as a pull), one image's
manifest, config and referrers. Bodies are the stored, already validated manifests;
they are read here as plain JSON for the fields the registry itself does not need
(platforms, history). Everything read from a blob is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage.errors import BlobUnknown, ManifestUnknown
from registry.storage.registry import Repository

MAX_CONFIG_SIZE = 1024 * 1024  # an image config larger than this is not shown
MAX_CHILDREN = 64  # platforms of an index whose sizes are added up
MAX_REFERRERS = 200  # referrers shown in a tree, over all its levels
MAX_REFERRER_DEPTH = 3
CONCURRENCY = 16
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(slots=True)
class Layer:
    digest: str
    media_type: str
    size: int


@dataclass(slots=True)
class Child:
    digest: str
    media_type: str
    size: int
    platform: Platform | None


@dataclass(slots=True)
class ImageConfig:
    created: str = ""
    platform: Platform | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Manifest:
    """One manifest as a page shows it."""

    digest: Digest
    media_type: str
    size: int  # the manifest, its config and layers (an index: and its platforms')
    artifact_type: str = ""
    config_digest: str = ""
    config: ImageConfig | None = None
    layers: list[Layer] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    subject: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return bool(self.children) or "index" in self.media_type or "list" in self.media_type

    @property
    def platforms(self) -> list[str]:
        if self.children:
            return [str(c.platform) for c in self.children if c.platform is not None]
        if self.config is not None and self.config.platform is not None:
            return [str(self.config.platform)]
        return []


@dataclass(slots=True)
class TagRow:
    tag: str
    pushed: float | None
    manifest: Manifest | None  # None: the tag points at nothing readable


@dataclass(slots=True)
class Referrer:
    digest: str
    media_type: str
    artifact_type: str
    size: int
    annotations: dict[str, str]
    referrers: dict[str, list[Referrer]]  # by artifact type


async def bounded_gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls`` at most CONCURRENCY at a time; their results in order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(run(c) for c in calls)))


async def tag_rows(repo: Repository, tags: Sequence[str]) -> list[TagRow]:
    async def row(tag: str) -> TagRow:
        try:
            digest = await repo.tags.resolve(tag)
            pushed: float | None = await repo.tags.pushed_at(tag)
            manifest: Manifest | None = await read_manifest(repo, digest, with_children=True)
        except (ManifestUnknown, BlobUnknown):
            pushed = manifest = None
        return TagRow(tag, pushed, manifest)

    return await bounded_gather([functools.partial(row, t) for t in tags])


async def read_manifest(repo: Repository, digest: Digest, *, with_children: bool) -> Manifest:
    """``digest``'s manifest as a page shows it (by digest: not a pull of any tag)."""
    stored = await repo.manifests.get(digest)
    document = _json_object(stored.body)
    media_type = stored.media_type
    result = Manifest(
        digest=stored.digest,
        media_type=media_type,
        size=len(stored.body),
        artifact_type=_text(document.get("artifactType")),
        annotations=_strings(document.get("annotations")),
    )
    subject = document.get("subject")
    if isinstance(subject, dict):
        result.subject = _text(subject.get("digest"))
    config = document.get("config")
    if isinstance(config, dict):
        result.config_digest = _text(config.get("digest"))
        result.size += _size(config.get("size"))
        if not result.artifact_type and "image.config" not in _text(config.get("mediaType")):
            result.artifact_type = _text(config.get("mediaType"))
        result.config = await _read_config(repo, result.config_digest)
    for layer in _objects(document.get("layers")):
        size = _size(layer.get("size"))
        result.layers.append(Layer(_text(layer.get("digest")), _text(layer.get("mediaType")), size))
        result.size += size
    for child in _objects(document.get("manifests")):
        platform = child.get("platform")
        result.children.append(
            Child(
                _text(child.get("digest")),
                _text(child.get("mediaType")),
                _size(child.get("size")),
                _platform(platform) if isinstance(platform, dict) else None,
            )
        )
    if with_children and result.children:
        sizes = await bounded_gather(
            [functools.partial(_child_size, repo, c) for c in result.children[:MAX_CHILDREN]]
        )
        result.size += sum(sizes)
    return result


async def _child_size(repo: Repository, child: Child) -> int:
    try:
        digest = parse_digest(child.digest)
        return (await read_manifest(repo, digest, with_children=False)).size
    except (InvalidDigest, ManifestUnknown, BlobUnknown):
        return child.size


async def _read_config(repo: Repository, digest_text: str) -> ImageConfig | None:
    try:
        digest = parse_digest(digest_text)
        descriptor = await repo.blobs.stat(digest)
        if descriptor.size > MAX_CONFIG_SIZE:
            return None
        document = _json_object(await repo.blobs.store.get(digest))
    except (InvalidDigest, BlobUnknown):
        return None
    inner = document.get("config")
    inner = inner if isinstance(inner, dict) else {}
    architecture = _text(document.get("architecture"))
    history = [
        {
            "created": _text(h.get("created")),
            "created_by": _text(h.get("created_by")),
            "comment": _text(h.get("comment")),
            "empty_layer": "yes" if h.get("empty_layer") is True else "",
        }
        for h in _objects(document.get("history"))
    ]
    return ImageConfig(
        created=_text(document.get("created")),
        platform=_platform(document) if architecture else None,
        entrypoint=_string_list(inner.get("Entrypoint")),
        cmd=_string_list(inner.get("Cmd")),
        env=_string_list(inner.get("Env")),
        labels=_strings(inner.get("Labels")),
        history=history,
    )


async def referrer_tree(repo: Repository, subject: Digest) -> dict[str, list[Referrer]]:
    """The referrers of ``subject`` by artifact type, each with its own referrers (a
    signature of an SBOM, say), at most MAX_REFERRER_DEPTH levels and MAX_REFERRERS nodes."""
    budget = [MAX_REFERRERS]

    async def level(digest: Digest, depth: int) -> dict[str, list[Referrer]]:
        tree: dict[str, list[Referrer]] = {}
        if depth > MAX_REFERRER_DEPTH or budget[0] <= 0:
            return tree
        for descriptor in await repo.referrers.for_subject(digest, None):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            node = Referrer(
                digest=_text(descriptor.get("digest")),
                media_type=_text(descriptor.get("mediaType")),
                artifact_type=_text(descriptor.get("artifactType")) or "(no artifact type)",
                size=_size(descriptor.get("size")),
                annotations=_strings(descriptor.get("annotations")),
                referrers={},
            )
            with contextlib.suppress(InvalidDigest):
                node.referrers = await level(parse_digest(node.digest), depth + 1)
            tree.setdefault(node.artifact_type, []).append(node)
        return tree

    return await level(subject, 1)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return document if isinstance(document, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _string_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _platform(value: dict[str, Any]) -> Platform:
    return Platform(
        _text(value.get("os")), _text(value.get("architecture")), _text(value.get("variant"))
    )
