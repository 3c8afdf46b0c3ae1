"""The machine's own limits, measured in the same run: hashing, page-cache writes, a
sendfile copy over loopback, and what the benchmark's clients achieve against a peer that
does nothing (bench.sink) — the most they could measure of a registry."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.client import file_body, new_session, pull_discard, pull_verify
from bench.data import BlobFile

_PIECE = 16 * 1024 * 1024


def sha256_rate(size: int) -> float:
    """MB/s of ``hashlib.sha256`` over ``size`` bytes in 16 MiB updates."""
    piece = os.urandom(_PIECE)
    hasher = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(max(1, size // _PIECE)):
        hasher.update(piece)
    return max(1, size // _PIECE) * _PIECE / (time.perf_counter() - started) / 1e6


def page_cache_write_rate(directory: Path, size: int) -> float:
    """MB/s of writing ``size`` bytes to a new file, without fsync (what a push writes)."""
    piece = os.urandom(_PIECE)
    path = directory / "write-test"
    os.sync()
    started = time.perf_counter()
    with path.open("wb") as file:
        for _ in range(max(1, size // _PIECE)):
            file.write(piece)
    elapsed = time.perf_counter() - started
    path.unlink()
    return max(1, size // _PIECE) * _PIECE / elapsed / 1e6


def sendfile_loopback_rate(blob: BlobFile) -> float:
    """MB/s of ``os.sendfile`` of the blob file to a loopback TCP peer that discards it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def receive() -> None:
            connection, _ = listener.accept()
            buffer = bytearray(4 * 1024 * 1024)
            with connection:
                while connection.recv_into(buffer):
                    pass

        receiver = threading.Thread(target=receive)
        receiver.start()
        with socket.create_connection(("127.0.0.1", port)) as sender, blob.path.open("rb") as f:
            started = time.perf_counter()
            offset = 0
            while offset < blob.size:
                offset += os.sendfile(sender.fileno(), f.fileno(), offset, blob.size - offset)
            sender.shutdown(socket.SHUT_WR)
            receiver.join()
            return blob.size / (time.perf_counter() - started) / 1e6


async def _client_rates(blob: BlobFile, rounds: int) -> dict[str, list[float]]:
    """The clients against bench.sink: aiohttp push and pulls, and curl's push for comparison."""
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sink", str(blob.path), stdout=asyncio.subprocess.PIPE
    )
    assert sink.stdout is not None
    url = f"http://127.0.0.1:{int(await sink.stdout.readline())}/blob"
    rates: dict[str, list[float]] = {}

    async def measure(name: str, operation: Callable[[], Awaitable[object]]) -> None:
        started = time.perf_counter()
        await operation()
        rates.setdefault(name, []).append(blob.size / (time.perf_counter() - started) / 1e6)

    async def curl_push() -> None:
        process = await asyncio.create_subprocess_exec(
            "curl", "-sf", "-o", "/dev/null", "-H", "Expect:", "-T", str(blob.path), url
        )
        if await process.wait():
            raise RuntimeError("curl push to the sink failed")

    try:
        async with new_session() as session:

            async def aiohttp_push() -> None:
                headers = {"Content-Length": str(blob.size)}
                body = file_body(blob.path, 0, blob.size)
                async with session.put(url, data=body, headers=headers) as response:
                    if response.status != 201:
                        raise RuntimeError(f"the sink answered {response.status}")

            for _ in range(rounds):
                await measure("client_push_aiohttp", aiohttp_push)
                if shutil.which("curl"):
                    await measure("client_push_curl", curl_push)
                await measure(
                    "client_pull_verified_aiohttp",
                    lambda: pull_verify(session, url, blob.digest, blob.size),
                )
                await measure(
                    "client_pull_unverified_aiohttp", lambda: pull_discard(session, url, blob.size)
                )
    finally:
        sink.kill()
        await sink.wait()
    return rates


async def machine_limits(blob: BlobFile, directory: Path, rounds: int) -> dict[str, Any]:
    """Each limit's median and range over ``rounds``, in MB/s."""
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        rates.setdefault("sha256", []).append(await asyncio.to_thread(sha256_rate, blob.size))
        rates.setdefault("page_cache_write", []).append(
            await asyncio.to_thread(page_cache_write_rate, directory, blob.size)
        )
        rates.setdefault("sendfile_loopback", []).append(
            await asyncio.to_thread(sendfile_loopback_rate, blob)
        )
    rates.update(await _client_rates(blob, rounds))
    return {
        name: {
            "unit": "MB/s",
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "bytes": blob.size,
        }
        for name, values in rates.items()
    }


def _version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if (result.stdout or result.stderr)
        else ""
    )


def source_info(tree: Path) -> dict[str, Any]:
    """Which portside was measured: the tree, and its git commit and changes when it has one."""
    info: dict[str, Any] = {"tree": str(tree)}
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        changes = subprocess.run(
            [
                "git",
                "-C",
                str(tree),
                "status",
                "--porcelain",
                "--",
                "registry",
                "tokenauth",
                "shared",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return info
    if commit.returncode == 0:
        info["commit"] = commit.stdout.strip()
        info["uncommitted_changes"] = len(changes.stdout.splitlines())
    return info


def export_revision(revision: str, directory: Path) -> dict[str, Any]:
    """Extract portside's packages as committed in ``revision`` (git archive, read-only)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if commit.returncode:
        raise RuntimeError(commit.stderr.strip() or f"unknown revision {revision}")
    archive = subprocess.run(
        ["git", "archive", commit.stdout.strip(), "registry", "tokenauth", "shared"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if archive.returncode:
        raise RuntimeError(archive.stderr.decode(errors="replace").strip())
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return {
        "tree": f"git archive {revision}",
        "commit": commit.stdout.strip(),
        "uncommitted_changes": 0,
    }


def host_info() -> dict[str, Any]:
    """What the figures came from."""
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "reference": _version(["docker-registry", "--version"]),
        "wrk": _version(["wrk", "-v"]),
        "ab": _version(["ab", "-V"]),
        "load_average": os.getloadavg(),
    }
