"""``python -m bench``: portside against the reference registry, side by side.

    .venv/bin/python -m bench            # the full run (about 7-10 minutes on 2 cores)
    .venv/bin/python -m bench --quick    # under about two minutes
    .venv/bin/python -m bench --help

Results: a table on stdout, ``results.json`` and ``ratios.png`` (with the optional extra
``bench``: matplotlib) in ``bench/results/<time>/``, with the servers' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.machine import export_revision, host_info, source_info
from bench.plan import PROFILES, SCENARIOS, make_plan, parse_size
from bench.report import format_machine, format_table, plot, write_json
from bench.runner import run, timestamp

NOTES = [
    "Rounds alternate the servers, the order reversed every other round (A B, B A); each "
    "figure is the median of the rounds, with the min-max range; ratios are "
    "portside/reference, and ratio_rounds_median is the median of the rounds' ratios, "
    "each of two adjacent samples.",
    "Where a scenario repeats disturbed rounds (requests, tokens, pulls, gc_online), a "
    "round with CPU steal, others' CPU or a slow machine-speed probe above the thresholds "
    "is discarded and measured again (at most --retries times); 'discarded' counts them "
    "by reason (docs/performance.md, Method).",
    "Each server's other_cores is the CPU the rest of the machine used meanwhile: the "
    "machine may be shared, and that load is noise in both servers' figures.",
    "Blob pushes and pulls use an aiohttp client streaming from a file (faster than curl "
    "here: see machine_limits client_push_*); GETs use wrk, HEADs ab (wrk cannot HEAD).",
]


def _environment(pairs: Sequence[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {pair!r}")
        result[name] = value
    return result


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="profile",
        help="the same as --profile quick",
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario")
    parser.add_argument(
        "--blob-size",
        action="append",
        type=parse_size,
        dest="blob_sizes",
        help="scenario 1's blob size, e.g. 1GiB (repeatable)",
    )
    parser.add_argument("--chunk-size", type=parse_size, help="chunked-push chunk, e.g. 16MiB")
    parser.add_argument(
        "--seconds", type=int, dest="rate_seconds", help="the length of each wrk/ab run"
    )
    parser.add_argument("--clients", type=int, help="concurrent image pushers (scenario 3)")
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of " + ",".join(SCENARIOS) + " (soak only when named)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        help="how many times a disturbed round (or online-collection window) is measured "
        "again before it is kept, marked disturbed",
    )
    parser.add_argument(
        "--max-other-cores",
        type=float,
        help="others' CPU (cores) above which a round counts as disturbed (default 0.10)",
    )
    parser.add_argument("--soak-clients", type=int, help="concurrent clients of the chaos soak")
    parser.add_argument("--soak-seconds", type=int, help="how long the chaos soak runs")
    parser.add_argument(
        "--portside-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the portside process (repeatable)",
    )
    parser.add_argument(
        "--portside-rev",
        metavar="REV",
        help="measure portside (and tokenauth) as committed in git revision REV, e.g. HEAD "
        "or a tag; default: the working tree as it is",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="results go to OUT/<time>/ (default: bench/results)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="the production configuration: both registries log at level info with their "
        "access logs on and serve Prometheus metrics (default: level error, access logs "
        "and metrics off)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    scenarios = None
    if args.scenarios:
        scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    plan = make_plan(
        args.profile,
        rounds=args.rounds,
        blob_sizes=tuple(args.blob_sizes) if args.blob_sizes else None,
        chunk_size=args.chunk_size,
        rate_seconds=args.rate_seconds,
        clients=args.clients,
        retries=args.retries,
        max_other_cores=args.max_other_cores,
        soak_clients=args.soak_clients,
        soak_seconds=args.soak_seconds,
        scenarios=scenarios,
        portside_env=_environment(args.portside_env) or None,
        access_log=args.access_log,
        keep=args.keep,
    )
    source: dict[str, Any] = source_info(Path.cwd())
    scratch = None
    if args.portside_rev:
        scratch = tempfile.TemporaryDirectory(prefix="portside-src-")
        try:
            source = export_revision(args.portside_rev, Path(scratch.name))
        except RuntimeError as error:
            print(f"--portside-rev: {error}", file=sys.stderr)
            return 2
        plan = dataclasses.replace(plan, portside_tree=Path(scratch.name))
    out = args.out / timestamp()
    out.mkdir(parents=True, exist_ok=True)
    host = host_info()
    started = time.time()
    try:
        outcome = asyncio.run(run(plan, out / "logs"))
    finally:
        if scratch is not None:
            scratch.cleanup()
    finished = time.time()
    title = (
        f"portside vs reference registry 2.8.2 - {host['cpu']}, {host['cores']} cores - "
        f"{time.strftime('%Y-%m-%d', time.localtime(started))} ({plan.profile})"
    )
    document: dict[str, Any] = {
        "title": title,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_seconds": round(finished - started, 1),
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "host": host,
        "portside_source": source,
        "load_average_at_end": host_info()["load_average"],
        "notes": NOTES,
        "skipped": outcome.skipped,
        "failures": outcome.failures,
        "machine_limits": outcome.limits,
        "metrics": [metric.summary() for metric in outcome.metrics],
    }
    write_json(out / "results.json", document)
    plotted = plot(out / "ratios.png", outcome.metrics, title)
    print(title)
    if outcome.limits:
        print(format_machine(outcome.limits))
    print(format_table(outcome.metrics))
    for scenario, reason in outcome.skipped.items():
        print(f"skipped {scenario}: {reason}")
    print(
        f"\nresults: {out / 'results.json'}"
        + (f", plot: {out / 'ratios.png'}" if plotted else " (no plot: pip install .[bench])")
    )
    for failure in outcome.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
