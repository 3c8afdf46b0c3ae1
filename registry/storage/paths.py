"""Where everything lives inside a driver: Distribution's on-disk layout, kept exactly.

Keeping the reference registry's layout means an operator can point portside at an
existing ``/var/lib/registry`` and keep every image. Every function takes names and
digests that the caller has already validated.
"""

from __future__ import annotations

from shared.digest import Digest

ROOT = "/docker/registry/v2"
REPOSITORIES = f"{ROOT}/repositories"


def blob_data(digest: Digest) -> str:
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blob_dir(digest: Digest) -> str:
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


def manifests_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests"


def revision_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"


def tags_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/current/link"


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{tag_dir(name, tag)}/index/{digest.algorithm}/{digest.hex}/link"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{REPOSITORIES}/{name}/_uploads/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/_referrers/subjects/{subject.algorithm}/{subject.hex}"


def referrer_entry(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{referrer.algorithm}/{referrer.hex}/descriptor"
