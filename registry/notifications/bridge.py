"""What handlers call when something happened that endpoints hear of (Distribution's
``bridge.go``): each builds the event from the request and publishes it, and does nothing
when no endpoint is configured.

Events follow Distribution 2.8 with one exception: a ``HEAD`` is not a pull (2.8 sends
pull events for ``HEAD`` of manifests and blobs; 3.x does not, since a client checking
whether a blob exists has pulled nothing).
"""

from __future__ import annotations

from aiohttp import web

from registry.handlers.base import url_for
from registry.notifications import events
from registry.notifications.notifier import NOTIFIER
from registry.storage.blobs import BlobDescriptor
from registry.storage.manifest_formats import Descriptor, ParsedManifest, parse_manifest
from registry.storage.manifests import StoredManifest


def _publish(request: web.Request, action: str, target: dict[str, object]) -> None:
    notifier = request.app.get(NOTIFIER)
    if notifier is not None:
        notifier.publish(events.new_event(request, notifier.source, action, target))


def _manifest(
    request: web.Request,
    action: str,
    repository: str,
    manifest: StoredManifest,
    tag: str,
    parsed: ParsedManifest | None = None,
) -> None:
    notifier = request.app.get(NOTIFIER)
    if notifier is None or (action == "pull" and request.method == "HEAD"):
        return
    references: tuple[Descriptor, ...] = ()
    if notifier.include_references:
        if parsed is None:
            try:
                parsed = parse_manifest(manifest.body, manifest.media_type)
            except Exception:  # stored before validation tightened: no references, no error
                parsed = None
        if parsed is not None:
            references = (*parsed.blobs, *parsed.manifests)
    url = url_for(request, f"/v2/{repository}/manifests/{manifest.digest}")
    target = events.manifest_target(
        repository,
        manifest.media_type,
        str(manifest.digest),
        len(manifest.body),
        url,
        tag,
        references,
    )
    notifier.publish(events.new_event(request, notifier.source, action, target))


def manifest_pushed(
    request: web.Request,
    repository: str,
    manifest: StoredManifest,
    parsed: ParsedManifest,
    tag: str = "",
) -> None:
    _manifest(request, "push", repository, manifest, tag, parsed)


def manifest_pulled(
    request: web.Request, repository: str, manifest: StoredManifest, tag: str = ""
) -> None:
    _manifest(request, "pull", repository, manifest, tag)


def _blob(
    request: web.Request,
    action: str,
    repository: str,
    descriptor: BlobDescriptor,
    from_repository: str = "",
) -> None:
    if NOTIFIER not in request.app or (action == "pull" and request.method == "HEAD"):
        return
    url = url_for(request, f"/v2/{repository}/blobs/{descriptor.digest}")
    target = events.blob_target(
        repository, str(descriptor.digest), descriptor.size, url, from_repository
    )
    _publish(request, action, target)


def blob_pushed(request: web.Request, repository: str, descriptor: BlobDescriptor) -> None:
    _blob(request, "push", repository, descriptor)


def blob_pulled(request: web.Request, repository: str, descriptor: BlobDescriptor) -> None:
    _blob(request, "pull", repository, descriptor)


def blob_mounted(
    request: web.Request, repository: str, descriptor: BlobDescriptor, from_repository: str
) -> None:
    _blob(request, "mount", repository, descriptor, from_repository)


def deleted(request: web.Request, repository: str, *, digest: str = "", tag: str = "") -> None:
    """A manifest (by ``digest``), a tag or a blob (by ``digest``) was deleted."""
    _publish(request, "delete", events.deletion_target(repository, digest, tag))
