"""How the online-collection figure is formed from its runs: busy runs between idle
runs, each against the mean of its neighbours, so that a drift of the machine over the
scenario does not land in the figure as it did against one idle run measured first."""

from __future__ import annotations

import pytest

from bench.scenarios.gc_online import neighbour_ratios, schedule


def test_busy_runs_alternate_with_idle_runs_and_idle_runs_close_the_sequence() -> None:
    assert schedule(1) == [False, True, False]
    assert schedule(3) == [False, True, False, True, False, True, False]
    assert schedule(0) == [False, True, False]  # at least one busy run


def test_a_linear_drift_cancels() -> None:
    """The machine speeds up by 1,000 req/s per run while collecting costs 10%: against
    the idle run before each busy run the figure was 100% (and 125% against one idle run
    measured first); against the mean of both neighbours it is 90%."""
    idle = [4000.0, 6000.0, 8000.0]
    runs = [(False, idle[0]), (True, 0.9 * 5000), (False, idle[1]), (True, 0.9 * 7000)]
    runs.append((False, idle[2]))
    assert neighbour_ratios(runs) == pytest.approx([90.0, 90.0])


def test_a_busy_run_without_an_idle_neighbour_is_refused() -> None:
    with pytest.raises(ValueError, match="no idle run"):
        neighbour_ratios([(True, 100.0), (True, 100.0)])
    with pytest.raises(ValueError, match="no idle run"):
        neighbour_ratios([(False, 0.0), (True, 100.0)])  # wrk served nothing
