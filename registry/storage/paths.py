"""Where everything lives inside a driver: Distribution's on-disk layout, kept exactly.

Keeping the reference registry's layout means an operator can point portside at an
existing ``/var/lib/registry`` and keep every image. Every function takes names and
digests that the caller has already validated.
"""

from __future__ import annotations

from registry.oci.digest import Digest

ROOT = "/docker/registry/v2"
REPOSITORIES = f"{ROOT}/repositories"
BLOBS = f"{ROOT}/blobs"
DATA = "data"  # a blob's content, in its directory
LINK = "link"  # a link's digest, in its directory


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/{DATA}"


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_lastref(digest: Digest) -> str:
    """portside's marker of when the blob was last referenced (its modified time), on
    backends whose files' modified times cannot be set; beside ``data``, which
    Distribution's blob walk and garbage collection treat as the directory's only file."""
    return f"{blob_dir(digest)}/lastref"


# Online garbage collection's shared records (docs/online-gc.md): outside ``blobs`` and
# ``repositories``, the only trees Distribution reads.
GC = f"{ROOT}/_gc"
GC_CONDEMNED = f"{GC}/condemned"
GC_LEASES = f"{GC}/leases"


def gc_condemned(run: str) -> str:
    """The digests one collection run is about to delete (one digest a line)."""
    return f"{GC_CONDEMNED}/{run}"


def gc_lease(run: str) -> str:
    """A collection run's lease, renewed while its record holds pushes back."""
    return f"{GC_LEASES}/{run}"


def gc_clock(run: str) -> str:
    """A file a collection run writes to read the storage's own clock."""
    return f"{GC}/clock/{run}"


# Directories named so inside a repository are its data, not nested repository names
# (the name grammar never starts a component with "_").
MANIFESTS = "_manifests"
LAYERS = "_layers"
UPLOADS = "_uploads"
REFERRERS = "_referrers"


def is_data_directory(component: str) -> bool:
    """Whether a directory entry under the repositories is a repository's own data (or a
    hidden temporary file) rather than a component of a repository name."""
    return component.startswith(("_", "."))


def repository(name: str) -> str:
    """The directory of a repository, or of a prefix of names ("" for the top)."""
    return f"{REPOSITORIES}/{name}".rstrip("/")


def repository_part(name: str, part: str) -> str:
    """One of a repository's data directories (``MANIFESTS``, ``LAYERS``, ``UPLOADS``)."""
    return f"{REPOSITORIES}/{name}/{part}"


def layer_link_dir(name: str, digest: Digest) -> str:
    """The directory of a layer link: the repository may read this blob."""
    return f"{REPOSITORIES}/{name}/{LAYERS}/{digest.algorithm}/{digest.hex}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{layer_link_dir(name, digest)}/link"


def manifests_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{MANIFESTS}"


def layers_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{LAYERS}"


def revisions_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{MANIFESTS}/revisions"


def revision_link_dir(name: str, digest: Digest) -> str:
    """The directory of a revision link: the repository holds this manifest."""
    return f"{REPOSITORIES}/{name}/{MANIFESTS}/revisions/{digest.algorithm}/{digest.hex}"


def revision_link(name: str, digest: Digest) -> str:
    return f"{revision_link_dir(name, digest)}/link"


def tags_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/current/link"


def tag_pulled(name: str, tag: str) -> str:
    """When ``tag`` was last pulled (a Unix time), written at most once per resolution by
    the serving registry; portside's own file, beside ``current`` and ``index``, which
    Distribution ignores."""
    return f"{tag_dir(name, tag)}/pulled"


def tag_index_dir(name: str, tag: str) -> str:
    """The history of ``tag``: an entry for every digest it ever pointed at."""
    return f"{tag_dir(name, tag)}/index"


def tag_index_entry(name: str, tag: str, digest: Digest) -> str:
    """The directory recording that ``tag`` once pointed at ``digest``."""
    return f"{tag_index_dir(name, tag)}/{digest.algorithm}/{digest.hex}"


def tag_index_link(name: str, tag: str, digest: Digest) -> str:
    return f"{tag_index_entry(name, tag, digest)}/link"


def uploads_dir(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{UPLOADS}"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{uploads_dir(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def upload_hash_state(name: str, upload_id: str, algorithm: str, offset: int) -> str:
    """The running hash of an upload's first ``offset`` bytes (Distribution's place)."""
    return f"{upload_dir(name, upload_id)}/hashstates/{algorithm}/{offset}"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/{REFERRERS}/subjects/{subject.algorithm}/{subject.hex}"


def referrer_dir(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{referrer.algorithm}/{referrer.hex}"


def referrer_entry(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrer_dir(name, subject, referrer)}/descriptor"
