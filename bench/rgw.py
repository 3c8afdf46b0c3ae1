"""Ceph's RADOS Gateway for the benchmark: ``scripts/rgw-single-node`` (a single-node
cluster with one S3 user) in its own process group, the few S3 calls the S3 scenario
makes outside the registries (buckets, removing a blob between pushes), and RGW's
garbage collection run on demand."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

from bench.servers import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rgw-single-node"
READY_LINE = b"rgw-single-node: ready"
START_TIMEOUT = 150.0  # a whole Ceph cluster from nothing, on a busy 2-core machine
ADMIN_TIMEOUT = 120.0  # one radosgw-admin command, on a busy machine
GC_ATTEMPTS = 3
TOOLS = ("ceph-mon", "ceph-mgr", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool")


def rgw_missing() -> list[str]:
    """The Ceph tools this machine lacks (Debian: ceph-mon ceph-mgr ceph-osd radosgw)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class RadosGateway:
    """A running single-node cluster; ``stop()`` ends every daemon of it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        # A throw-away cluster's own user, new each run.
        self.access_key = "bench-" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(24)
        self.log_path = workdir / "rgw-single-node.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start, once more with a new cluster if the first one does not come up."""
        try:
            await self._start()
        except RuntimeError:
            await self._start()

    async def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(SCRIPT),
                str(self.workdir / "cluster"),
                str(self.port),
                self.access_key,
                self.secret_key,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its daemons share its group: stop() ends them
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while READY_LINE not in self.log_path.read_bytes():
            if self.process.returncode is not None or loop.time() > deadline:
                await self.stop()
                tail = self.log_path.read_text(errors="replace").splitlines()[-8:]
                raise RuntimeError(f"RGW did not start ({self.log_path}): " + " | ".join(tail))
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # the script stops its daemons in order
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever outlived the script

    @property
    def conf(self) -> Path:
        return self.workdir / "cluster" / "ceph.conf"

    async def admin(self, *arguments: str) -> str:
        """``radosgw-admin`` on this cluster; its standard output."""
        process = await asyncio.create_subprocess_exec(
            "radosgw-admin",
            "-c",
            str(self.conf),
            *arguments,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), ADMIN_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"radosgw-admin {' '.join(arguments)}: no answer") from None
        if process.returncode:
            text = err.decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"radosgw-admin {' '.join(arguments)}: {text}")
        return out.decode()

    async def garbage(self) -> int:
        """How many RADOS objects wait for RGW's garbage collection, whatever their age."""
        entries = json.loads(await self.admin("gc", "list", "--include-all"))
        return sum(len(entry.get("objs", [])) for entry in entries)

    async def collect_garbage(self) -> None:
        """Collect RGW's garbage now, whatever its age, and check that none is left.

        Every push leaves 76-141 RADOS objects behind (the upload's parts, a staged copy,
        the blob it replaced), which RGW deletes up to ``rgw gc processor period`` (10 s)
        later: in the middle of whatever is measured next. Collected first, it is no
        one's cost. Tried a few times: a shard that RGW's own collector holds meanwhile is
        skipped by ``gc process``."""
        left = 0
        for _ in range(GC_ATTEMPTS):
            await self.admin("gc", "process", "--include-all")
            left = await self.garbage()
            if not left:
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"RGW's garbage collection left {left} objects")

    def client(self) -> Any:
        """A botocore S3 client of the cluster's user (sync: call it in a thread)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    async def create_bucket(self) -> str:
        bucket = f"bench-{uuid.uuid4().hex[:16]}"

        def create() -> None:
            client = self.client()
            try:
                client.create_bucket(Bucket=bucket)
            finally:
                client.close()

        await asyncio.to_thread(create)
        return bucket

    async def delete_prefix(self, bucket: str, prefix: str) -> None:
        """Remove every object under ``prefix`` (a blob, before it is pushed again)."""

        def delete() -> None:
            client = self.client()
            try:
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix
                )
                for page in pages:
                    keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                    if keys:
                        client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            finally:
                client.close()

        await asyncio.to_thread(delete)

    def storage_yaml(self, bucket: str, *, redirect: bool) -> str:
        """The ``storage:`` lines both registries read: Distribution 2.8's S3 keys (with a
        ``regionendpoint`` it addresses the bucket by path), and whether pulls redirect.
        Distribution redirects unless ``redirect.disable``; portside only with
        ``redirect.enabled``: both keys are written, each registry reads its own."""
        return (
            "  s3:\n"
            f"    accesskey: {self.access_key}\n"
            f"    secretkey: {self.secret_key}\n"
            "    region: us-east-1\n"
            f"    regionendpoint: {self.url}\n"
            f"    bucket: {bucket}\n"
            "    secure: false\n"
            "    v4auth: true\n"
            "    chunksize: 10485760\n"
            "  redirect:\n"
            f"    disable: {str(not redirect).lower()}\n"
            f"    enabled: {str(redirect).lower()}\n"
        )
