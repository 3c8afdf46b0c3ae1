"""The S3 writer's resident memory while it pushes a large object: two parts (the one being
uploaded and the one filling), never a third copy of either.

It is measured as the growth of the peak resident set of a process of its own (Linux's
VmHWM, reset before the push), since part buffers live
outside what tracemalloc sees (registry/storage/driver/s3_parts.py says why), and the
copies it used to make were the heap's and aiohttp's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support.backing_services import S3Server
from tests.support.portside_servers import REPOSITORY_ROOT

MIB = 1024 * 1024
PART = 16 * MIB  # large against the interpreter's own noise (a few MiB)
PARTS = 5

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from registry.storage.driver.s3 import S3Driver
    from registry.storage.s3_settings import S3DriverConfig

    def status(field: str) -> int:
        with open("/proc/self/status") as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise LookupError(field)

    async def main() -> None:
        settings, part, parts = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        driver = S3Driver(S3DriverConfig(**settings, chunksize=part))
        piece = os.urandom(1024 * 1024)
        # Load the client and its models, and open a connection, before the baseline.
        await driver.put_content("/warm-up", piece)
        await driver.get_content("/warm-up")
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak (VmHWM) starts again from the present
        before = status("VmRSS")
        writer = await driver.writer("/big/data")
        for _ in range(part * parts // len(piece) + 1):
            await writer.write(piece)
        await writer.close()
        after = status("VmHWM")
        size = (await driver.stat("/big/data")).size
        await driver.close()
        print(json.dumps({"growth": after - before, "size": size}))

    asyncio.run(main())
    """
)


def test_a_push_holds_two_parts_at_most(s3_server: S3Server, bucket: str) -> None:
    config = s3_server.driver_config(bucket)
    settings = {
        "bucket": config.bucket,
        "region": config.region,
        "regionendpoint": config.regionendpoint,
        "forcepathstyle": True,
        "accesskey": config.accesskey,
        "secretkey": config.secretkey,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings), str(PART), str(PARTS)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["size"] == PART * PARTS + MIB
    # Two parts, and what sending them costs beyond (a slice of a MiB or so). It was three
    # parts and more: a bytes copy of each filled part, and aiohttp's join of the request.
    assert result["growth"] < 2.5 * PART, result["growth"] / MIB
