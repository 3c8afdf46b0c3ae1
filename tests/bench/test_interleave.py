"""How the S3 scenario's pulls are ordered and summarised within a round: A B B A, so
that whatever changes along the round (the machine's load, RGW's leftovers from the
pushes) costs both servers alike, and the median of each server's samples."""

from __future__ import annotations

import statistics

import pytest

from bench.interleave import abba, summary
from bench.results import Sample


def test_each_server_is_first_of_a_pair_as_often_as_second() -> None:
    order = abba(["a", "b"], 4)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    pairs = [order[i : i + 2] for i in range(0, len(order), 2)]
    assert sum(pair[0] == "a" for pair in pairs) == sum(pair[0] == "b" for pair in pairs)


def test_a_drift_along_the_round_costs_both_servers_alike() -> None:
    """Two identical servers on a machine that slows down from one pull to the next (or
    an RGW that is busiest right after the pushes): one pull each, A then B, shows A
    faster; in A B B A order the medians are equal."""

    def medians(order: list[str]) -> dict[str, float]:
        speeds: dict[str, list[float]] = {}
        for position, server in enumerate(order):
            speeds.setdefault(server, []).append(400.0 - 25.0 * position)
        return {server: statistics.median(values) for server, values in speeds.items()}

    one_each = medians(["a", "b"])
    assert one_each["a"] / one_each["b"] == pytest.approx(400 / 375)
    balanced = medians(abba(["a", "b"], 4))
    assert balanced["a"] == balanced["b"]
    balanced = medians(abba(["a", "b"], 6))
    assert balanced["a"] == balanced["b"]


def test_an_odd_or_single_server_schedule_is_refused() -> None:
    for servers, count in ((["a", "b"], 3), (["a", "b"], 0), (["a"], 2), (["a", "b", "c"], 2)):
        with pytest.raises(ValueError, match="A B B A"):
            abba(servers, count)


def test_a_round_is_summarised_by_medians_and_its_highest_peak() -> None:
    samples = [
        Sample(value=v, peak_rss_mib=r, server_cores=c, client_cores=c, other_cores=c)
        for v, r, c in ((100.0, 90.0, 0.1), (300.0, 120.0, 0.3), (200.0, 100.0, 0.2))
    ]
    assert summary(samples) == Sample(
        value=200.0, peak_rss_mib=120.0, server_cores=0.2, client_cores=0.2, other_cores=0.2
    )
