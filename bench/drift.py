"""``python -m bench.drift``: how an unchanged server's throughput drifts, window by window,
beside what disturbed each window (steal, others' CPU, the machine-speed probe).

    .venv/bin/python -m bench.drift --windows 24 --seconds 3
    .venv/bin/python -m bench.drift --windows 24 --seconds 3 --reference --access-log

portside (and with ``--reference`` the reference registry, in A B B A order) serves one
small image's manifest by tag to wrk (32 connections), window after window, as scenario 2
does. Each window's line gives its rate with the figures ``bench.disturbance`` judges by;
the summary says whether the slow windows are the disturbed ones: the median rate of the
windows each reason flags against that of the clean ones, and the correlation of the rate
with each figure. Nothing is discarded here: this is the evidence for the thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.client import MANIFEST_ACCEPT, RegistryClient, new_session
from bench.disturbance import Judge
from bench.interleave import abba
from bench.loadgen import run_wrk
from bench.measure import Lab
from bench.results import Sample
from bench.scenarios import requests
from bench.servers import PORTSIDE, REFERENCE, Server, registry_server


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> str:
    try:
        return f"{statistics.correlation(xs, ys):+.2f}"
    except statistics.StatisticsError:  # a constant figure (no steal at all, say)
        return "n/a (constant)"


def summarise(judge: Judge, windows: Sequence[tuple[str, Sample]]) -> list[str]:
    """Per server: clean windows against those each reason flags, and correlations."""
    lines = []
    for name in sorted({server for server, _ in windows}):
        samples = [s for server, s in windows if server == name]
        rates = [s.value for s in samples]
        clean = [s.value for s in samples if not judge.reasons(s.disturbance)]
        lines.append(
            f"{name}: {len(samples)} windows, {min(rates):.0f}-{max(rates):.0f} req/s "
            f"(median {statistics.median(rates):.0f}); clean {len(clean)}"
            + (
                f", {min(clean):.0f}-{max(clean):.0f} (median {statistics.median(clean):.0f})"
                if clean
                else ""
            )
        )
        for kind in ("steal", "others' CPU", "slow probe"):
            flagged = [
                s.value
                for s in samples
                if any(r.startswith(kind) for r in judge.reasons(s.disturbance))
            ]
            if flagged:
                lines.append(
                    f"  flagged by {kind}: {len(flagged)}, median {statistics.median(flagged):.0f}"
                )
        lines.append(
            "  correlation of the rate with steal "
            + _correlation([s.steal for s in samples], rates)
            + ", with others' cores "
            + _correlation([s.other_cores for s in samples], rates)
            + ", with the probe's speed "
            + _correlation([s.speed for s in samples], rates)
            + ", with the server's cores "
            + _correlation([s.server_cores for s in samples], rates)
        )
        per_core = [s.value / s.server_cores for s in samples if s.server_cores > 0]
        if len(per_core) > 1:
            lines.append(
                f"  requests per server CPU second {min(per_core):.0f}-{max(per_core):.0f}"
                f" (median {statistics.median(per_core):.0f}); correlation with the probe's "
                "speed " + _correlation([s.speed for s in samples if s.server_cores > 0], per_core)
            )
    return lines


async def measure(windows: int, seconds: int, reference: bool, access_log: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="portside-drift-"))
    lab = Lab()
    try:
        servers: list[Server] = []
        for name in (PORTSIDE, REFERENCE) if reference else (PORTSIDE,):
            (workdir / name).mkdir()
            servers.append(
                await lab.start(
                    registry_server(
                        name, workdir / name, workdir / name / "root", access_log=access_log
                    )
                )
            )
        image = requests.the_image()
        async with new_session() as session:
            for server in servers:
                client = RegistryClient(session, server.url)
                await requests.push_image(client, requests.REPO, requests.TAG, image)
                await requests.warm_up(session, server, image, {})

        async def get(server: Server) -> float:
            url = f"{server.url}/v2/{requests.REPO}/manifests/{requests.TAG}"
            result = await run_wrk(
                url, duration=seconds, connections=32, headers={"Accept": MANIFEST_ACCEPT}
            )
            return result.requests_per_second

        order = abba(servers, windows) if reference else servers * windows
        taken: list[tuple[str, Sample]] = []
        print(
            f"{'#':>3} {'server':9} {'req/s':>7} {'steal%':>6} {'others':>6} "
            f"{'kernel':>6} {'server':>6} {'req/cs':>6} {'speed%':>6} {'load':>5}  reasons"
        )
        for number, server in enumerate(order):
            sample = await lab.sample(server, functools.partial(get, server))
            taken.append((server.name, sample))
            print(
                f"{number:3d} {server.name:9} {sample.value:7.0f} {100 * sample.steal:6.2f} "
                f"{sample.other_cores:6.2f} {sample.kernel_cores:6.2f} {sample.server_cores:6.2f} "
                f"{sample.value / max(sample.server_cores, 1e-9):6.0f} "
                f"{100 * sample.speed:6.1f} {os.getloadavg()[0]:5.2f}  "
                + "; ".join(lab.judge.reasons(sample.disturbance)),
                flush=True,
            )
        print(f"best probe {lab.judge.best:.0f} MB/s; thresholds {lab.judge.thresholds}")
        print("\n".join(summarise(lab.judge, taken)))
    finally:
        await lab.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__)
    parser.add_argument("--windows", type=int, default=24, help="per server (even)")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="the reference too, A B B A")
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.windows, args.seconds, args.reference, args.access_log))


if __name__ == "__main__":
    main()
