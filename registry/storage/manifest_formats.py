"""Parsing and validating manifests of every supported media type.

A manifest is stored byte for byte; this module only reads it to learn its media type,
the blobs and manifests it references, and its ``subject``, refusing anything malformed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from registry.oci import mediatypes
from registry.oci.digest import Digest, InvalidDigest, parse_digest
from registry.storage.errors import ManifestInvalid

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_REFERENCES = 10_000
# Real manifests nest arrays and objects 5 or 6 deep; the bound keeps a hostile body far
# from the JSON decoder's recursion limit (5,000 levels used to raise RecursionError).
MAX_NESTING = 100
_OPENERS_CLOSERS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# Layers that by design live elsewhere (Windows base layers): fetched from their urls.
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()

    @property
    def is_foreign(self) -> bool:
        return self.media_type in FOREIGN_LAYER_TYPES


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str
    blobs: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects of the JSON ``body`` nest deeper than ``limit``.

    Found without recursion, in C-speed passes: strings are dropped (their brackets do
    not count), every bracket becomes ``[``/``]``, and each pass removes the innermost
    ``[]`` pairs, one level at a time. Openers never closed count too: the decoder
    descends into them before it finds the body truncated.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: the common case, at once
    # Without escaped backslashes and quotes, every quote left opens or closes a string.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    brackets = outside_strings.translate(_OPENERS_CLOSERS, _NOT_BRACKETS)
    for _ in range(limit):
        inner = brackets.replace(b"[]", b"")
        if inner == brackets:
            break
        brackets = inner
    return b"[]" in brackets or brackets.count(b"[") > limit


def _load_json(body: bytes) -> Any:
    """``json.loads`` with the nesting bounded: too deep is a ValueError like bad JSON."""
    if nests_deeper_than(body, MAX_NESTING):
        raise ValueError(f"arrays and objects nested more than {MAX_NESTING} levels deep")
    return json.loads(body)


def media_type_of(body: bytes) -> str:
    """The media type a stored manifest declares (or its shape implies)."""
    try:
        document = _load_json(body)
    except ValueError:
        return mediatypes.OCI_MANIFEST
    return _declared_or_implied_type(document) if isinstance(document, dict) else ""


def _declared_or_implied_type(document: dict[str, Any]) -> str:
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if "manifests" in document:
        return mediatypes.OCI_INDEX
    if document.get("schemaVersion") == 1:
        return mediatypes.DOCKER_SCHEMA1_SIGNED
    return mediatypes.OCI_MANIFEST


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Validate ``body`` as a manifest; ``content_type`` is the request's header."""
    try:
        document = _load_json(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestInvalid(f"manifest is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    media_type = _resolve_media_type(document, content_type)
    if document.get("schemaVersion") != 2 and media_type != mediatypes.OCI_ARTIFACT_MANIFEST:
        raise ManifestInvalid("schemaVersion must be 2")
    subject = _descriptor(document["subject"], "subject") if "subject" in document else None
    artifact_type = _optional_string(document, "artifactType")
    annotations = _annotations(document)
    if media_type in mediatypes.INDEXES:
        manifests = _descriptors(document, "manifests", required=True)
        return ParsedManifest(
            media_type,
            manifests=manifests,
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )
    if media_type == mediatypes.OCI_ARTIFACT_MANIFEST:
        blobs = _descriptors(document, "blobs", required=False)
        return ParsedManifest(
            media_type,
            blobs=blobs,
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )
    if "config" not in document:
        raise ManifestInvalid("manifest has no config")
    config = _descriptor(document["config"], "config")
    layers = _descriptors(document, "layers", required=True)
    # Referrers report the config's type for manifests without artifactType
    # (image-spec: the empty config means "no type").
    if (
        artifact_type is None
        and media_type == mediatypes.OCI_MANIFEST
        and config.media_type != mediatypes.OCI_EMPTY
    ):
        artifact_type = config.media_type
    return ParsedManifest(
        media_type,
        blobs=(config, *layers),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def _resolve_media_type(document: dict[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    header = (content_type or "").split(";", 1)[0].strip().lower()
    if header in mediatypes.MANIFEST_TYPES:
        if declared and declared != header:
            raise ManifestInvalid(
                "mediaType does not match Content-Type",
                detail={"mediaType": declared, "contentType": header},
            )
        return header
    media_type = _declared_or_implied_type(document)
    if media_type in (mediatypes.DOCKER_SCHEMA1, mediatypes.DOCKER_SCHEMA1_SIGNED):
        raise ManifestInvalid("Docker schema 1 manifests are not supported; push schema 2")
    if media_type not in mediatypes.MANIFEST_TYPES:
        raise ManifestInvalid(f"unsupported manifest media type: {media_type[:100]!r}")
    return media_type


def _descriptors(document: dict[str, Any], key: str, required: bool) -> tuple[Descriptor, ...]:
    items = document.get(key)
    if items is None and not required:
        return ()
    if not isinstance(items, list):
        raise ManifestInvalid(f"{key} must be a list")
    if len(items) > MAX_REFERENCES:
        raise ManifestInvalid(f"{key} has more than {MAX_REFERENCES} entries")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items))


def _descriptor(item: Any, where: str) -> Descriptor:
    if not isinstance(item, dict):
        raise ManifestInvalid(f"{where} must be an object")
    media_type = item.get("mediaType")
    size = item.get("size")
    urls = item.get("urls", [])
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}.mediaType must be a non-empty string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}.size must be a non-negative integer")
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}.urls must be a list of strings")
    try:
        digest = parse_digest(str(item.get("digest")))
    except InvalidDigest as error:
        raise ManifestInvalid(f"{where}.digest: {error}") from None
    return Descriptor(media_type, digest, size, tuple(urls))


def _optional_string(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid(f"{key} must be a string")
    return value or None


def _annotations(document: dict[str, Any]) -> dict[str, str]:
    value = document.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestInvalid("annotations must map strings to strings")
    return value
