"""The pulls table names every server measured beside portside and its baseline, with its
ratio to the baseline: the second nginx's ratio to the first is the run's noise floor."""

from __future__ import annotations

from bench.report import format_table
from bench.results import Metric, Target
from bench.scenarios.pulls import CONTROL


def test_the_second_nginx_is_reported_with_its_ratio_to_the_first() -> None:
    metric = Metric(
        "ranges_concurrent_vs_nginx",
        "16 concurrent ranges of 8 MiB",
        "MB/s",
        "10. pulls",
        target=Target(">= 0.95x nginx", min_speedup=0.95),
        baseline="nginx",
    )
    for server, values in {
        "portside": [90.0, 80.0, 85.0],
        "nginx": [100.0, 100.0, 100.0],
        CONTROL: [110.0, 90.0, 95.0],
        "reference": [50.0, 60.0, 55.0],
    }.items():
        for value in values:
            metric.add_value(server, value)

    [context] = [line for line in format_table([metric]).splitlines() if "(baseline" in line]

    assert context == (
        "    (baseline: nginx; reference: 55.0 [50.0-60.0]; "
        f"{CONTROL}: 95.0 [90.0-110], 0.95x nginx [0.90-1.10])"
    )
