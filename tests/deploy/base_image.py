"""A Python base image built locally, for building portside's image where no public
registry is reachable.

``debootstrap`` bootstraps a minimal Debian (python3, python3-venv, ca-certificates) of
this machine's release from the mirror its apt already uses; the root filesystem is kept
as a tarball in a cache directory keyed by the release (``$PORTSIDE_TEST_CACHE``, by
default ``portside-test-cache`` in the system's temporary directory), so only the first
run pays for it (about two minutes). Before ``docker import`` the machine's own pip
settings are added — the http(s) index URLs and the CA bundle of ``pip config list`` —
so ``pip install`` inside ``docker build`` reaches the package index the way pip on this
machine does. Nothing machine-specific is written into the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

PACKAGES = ("python3", "python3-venv", "ca-certificates")
PIP_CA_PATH = "etc/ssl/certs/pip-build-ca.crt"


class BaseImageUnavailable(Exception):
    """The base image cannot be made here; the message says why."""


def cache_directory() -> Path:
    path = Path(os.environ.get("PORTSIDE_TEST_CACHE") or Path(tempfile.gettempdir()))
    if "PORTSIDE_TEST_CACHE" not in os.environ:
        path = path / "portside-test-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def debian_release() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if match is None:
        raise BaseImageUnavailable("/etc/os-release names no Debian release (VERSION_CODENAME)")
    return match.group(1)


def apt_mirror(release: str) -> str:
    """The URI apt uses for ``release`` itself (not -security or -updates)."""
    sources = Path("/etc/apt")
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = dict(
                    re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE)
                )
                if (
                    fields.get("Types", "").split()[:1] == ["deb"]
                    and release in fields.get("Suites", "").split()
                ):
                    return str(fields["URIs"].split()[0])
        elif path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == release:
                    return words[1]
    raise BaseImageUnavailable(f"apt has no source for Debian {release}")


def rootfs_tarball(release: str) -> Path:
    """The cached tarball of a minimal Debian ``release`` with Python; made if missing."""
    tarball = cache_directory() / f"debian-{release}-{'-'.join(PACKAGES)}.tar"
    if tarball.exists():
        return tarball
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise BaseImageUnavailable("debootstrap is not installed (Debian package debootstrap)")
    if os.geteuid() != 0:
        raise BaseImageUnavailable("debootstrap needs root")
    work = Path(tempfile.mkdtemp(prefix=f"debootstrap-{release}-", dir=cache_directory()))
    try:
        rootfs = work / "rootfs"
        completed = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                release,
                str(rootfs),
                apt_mirror(release),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if completed.returncode != 0:
            raise BaseImageUnavailable(f"debootstrap failed:\n{completed.stdout[-2000:]}")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)  # atomic: a concurrent or interrupted run never sees half
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def pip_settings() -> dict[str, str]:
    """This machine's effective pip settings (``pip config list``), by key without scope."""
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    settings: dict[str, str] = {}
    for line in completed.stdout.splitlines():
        key, _, value = line.partition("=")
        settings[key.rpartition(".")[2]] = value.strip().strip("'\"")
    return settings


def pip_files() -> dict[str, bytes]:
    """``etc/pip.conf`` (and the CA bundle it names) for pip inside the image build."""
    settings = pip_settings()
    lines = ["[global]"]
    for key in ("index-url", "extra-index-url", "trusted-host"):
        # Only what a container can reach: file:// indexes and find-links stay behind.
        values = [v for v in settings.get(key, "").split() if not v.startswith("file:")]
        if values:
            lines.append(f"{key} = {' '.join(values)}")
    files: dict[str, bytes] = {}
    cert = settings.get("cert") or os.environ.get("PIP_CERT", "")
    if cert and Path(cert).is_file():
        files[PIP_CA_PATH] = Path(cert).read_bytes()
        lines.append(f"cert = /{PIP_CA_PATH}")
    files["etc/pip.conf"] = ("\n".join(lines) + "\n").encode()
    return files


def import_base_image(docker: list[str], env: dict[str, str], tag: str) -> None:
    """``docker import`` the cached Debian root filesystem plus this machine's pip settings."""
    cached = rootfs_tarball(debian_release())
    with tempfile.TemporaryDirectory(prefix="portside-base-") as scratch:
        tarball = Path(scratch) / "base.tar"
        shutil.copyfile(cached, tarball)
        with tarfile.open(tarball, "a") as archive:
            for name, data in pip_files().items():
                info = tarfile.TarInfo(f"./{name}")
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, BytesIO(data))
        completed = subprocess.run(
            [*docker, "import", "--change", 'CMD ["python3"]', str(tarball), tag],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if completed.returncode != 0:
        raise BaseImageUnavailable(f"docker import failed: {completed.stderr}")
