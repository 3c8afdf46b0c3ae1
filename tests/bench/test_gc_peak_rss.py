"""The garbage-collection scenario's peak-RSS figure is the collector's own: not the
benchmark's size, which a child inherits as its high-water mark across fork and exec."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.scenarios.gc import _collect

MIB = 1024 * 1024


def test_peak_rss_is_the_collectors_own_not_the_benchmarks(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\n")
    ballast = bytearray(300 * MIB)  # the benchmark process, large: its pages touched
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    # Stand-ins for a collector (``python -c`` ignores the garbage-collect arguments).
    _, small = _collect([sys.executable, "-c", "pass"], config, None)
    _, large = _collect(
        [sys.executable, "-c", "b = bytearray(150 << 20); b[::4096] = b'1' * len(b[::4096])"],
        config,
        None,
    )
    del ballast
    assert small < 100, small  # a bare interpreter: about 10 MiB, never the 300 above
    assert 150 <= large < 250, large
