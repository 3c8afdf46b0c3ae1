"""The refusal-time estimate: per cost, smoothed, scaled from the costliest measured."""

from __future__ import annotations

from shared.refusal_timing import RefusalTimer


def test_padding_reaches_the_time_of_a_check_at_the_cost() -> None:
    timer = RefusalTimer()
    assert timer.padding(10, 0.001) == 0.0  # nothing measured yet: nothing to imitate
    timer.record(5, 0.004)
    assert timer.padding(10, 0.004) == 0.004 * 32 - 0.004  # scaled: 2**(10-5)
    timer.record(10, 0.100)
    assert timer.padding(10, 0.004) == 0.096  # measured at the cost itself: used as it is
    timer.record(10, 0.200)
    assert abs(timer.padding(10, 0.0) - 0.120) < 1e-9  # smoothed: 0.1 + 0.2 * (0.2 - 0.1)
    assert timer.padding(10, 0.5) == 0.0  # already slower: no padding
