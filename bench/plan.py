"""What a run measures and how long it takes: the profiles and the command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB

SCENARIOS = (
    "machine",
    "blobs",
    "requests",
    "images",
    "tokens",
    "listings",
    "durability",
    "gc",
    "gc_online",
    "flood",
    "mirror",
    "pulls",
    "s3",
    "soak",
)
# Run only when asked for (``--scenarios soak``): minutes of load and kills, and figures
# that compare portside with nothing.
OPT_IN = ("soak",)


@dataclass(frozen=True)
class Plan:
    profile: str
    rounds: int
    blob_sizes: tuple[int, ...]  # scenario 1 runs at each; the largest feeds the others
    chunk_size: int
    rate_seconds: int  # the length of one wrk/ab run
    connections: int = 32
    clients: int = 50
    layers: int = 3
    layer_size: int = MIB
    listing_scales: tuple[tuple[int, int], ...] = ((100, 1000), (1000, 10_000))
    page_size: int = 50  # the small store must hold more than one page
    latency_requests: int = 30
    gc_manifests: int = 10_000  # with five blobs each: the 50,000
    # Scenario 10 (pulls against nginx): one large blob, concurrent pulls of as many
    # distinct blobs as streams, and as many concurrent ranges of the large blob.
    pull_size: int = GIB
    pull_streams: int = 16
    pull_stream_size: int = 64 * MIB
    range_size: int = 8 * MIB
    scenarios: tuple[str, ...] = tuple(s for s in SCENARIOS if s not in OPT_IN)
    soak_clients: int = 100
    soak_seconds: int = 300
    soak_interval: float = 5.0  # seconds between faults, on average
    # Disturbed rounds (bench.disturbance) are measured again at most this many times;
    # others' CPU above max_other_cores disturbs a round.
    retries: int = 3
    max_other_cores: float = 0.10
    portside_env: dict[str, str] = field(default_factory=dict)
    portside_tree: Path | None = None  # run portside from this source tree (default: ours)
    access_log: bool = False  # both registries at level info with their access logs on
    out: Path = Path("bench/results")
    keep: bool = False


PROFILES = {
    # The figures: 1 GiB blobs (and 256 MiB, to show memory flat in the size).
    "full": Plan(
        "full", rounds=3, blob_sizes=(256 * MIB, GIB), chunk_size=16 * MIB, rate_seconds=10
    ),
    # Under about two minutes: enough to see a regression, not to publish.
    "quick": Plan(
        "quick",
        rounds=2,
        blob_sizes=(64 * MIB,),
        chunk_size=16 * MIB,
        rate_seconds=2,
        latency_requests=15,
        gc_manifests=2_000,
        pull_size=256 * MIB,
        pull_stream_size=16 * MIB,
        range_size=2 * MIB,
        soak_clients=20,
        soak_seconds=60,
        retries=2,
    ),
    # Seconds: the test that keeps the harness from rotting; its figures mean nothing.
    "tiny": Plan(
        "tiny",
        rounds=1,
        blob_sizes=(4 * MIB,),
        chunk_size=MIB,
        rate_seconds=1,
        clients=4,
        listing_scales=((20, 40), (40, 80)),
        page_size=10,
        latency_requests=3,
        gc_manifests=50,
        pull_size=4 * MIB,
        pull_streams=4,
        pull_stream_size=MIB,
        range_size=256 * 1024,
        soak_clients=4,
        soak_seconds=15,
        soak_interval=3.0,
        retries=0,  # a loaded CI machine disturbs every window: repeats only cost time
    ),
}


def make_plan(profile: str, **overrides: object) -> Plan:
    """The profile with every override that is not None applied."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PROFILES[profile], **changes)  # type: ignore[arg-type]


def parse_size(text: str) -> int:
    """``64MiB``, ``1GiB``, ``512KiB`` or a number of bytes."""
    units = {"kib": 1024, "mib": MIB, "gib": GIB, "b": 1}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * factor)
    return int(lowered)


def format_size(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"
