"""Equal refusal times: a wrong password must take as long as an unknown user.

Users files may mix bcrypt costs (Apache's ``htpasswd -B`` writes cost 5, ``registry
htpasswd`` cost 10), and a bcrypt check takes time in proportion to ``2**cost``. Unknown
users are checked against a dummy hash at the highest cost present; every refusal is then
padded, by sleeping rather than hashing, to the time a check at that cost takes now.

That time is measured from the checks at that cost themselves (the dummy's included),
smoothed, so it follows the machine's load as they do: a long check is preempted more
often than a short one, so scaling a cheap check's time up would fall short under load.
Until a check at that cost has run, the time is scaled from the costliest one measured;
``shared.credentials`` times one at start-up and after a reload raises the highest cost,
so that fallback (and the bare 0 before any measurement) only covers a failed timing.
"""

from __future__ import annotations

SMOOTHING = 0.2  # weight of the newest measurement: follows load within a few checks


class RefusalTimer:
    """Running estimates of how long a bcrypt check takes, per cost."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}  # cost -> smoothed duration of a check

    def record(self, cost: int, seconds: float) -> None:
        """Learn from one bcrypt check at ``cost`` that took ``seconds``."""
        previous = self.seconds.get(cost)
        self.seconds[cost] = (
            seconds if previous is None else previous + SMOOTHING * (seconds - previous)
        )

    def estimate(self, cost: int) -> float | None:
        """How long a check at ``cost`` takes now; None before any measurement."""
        if cost in self.seconds:
            return self.seconds[cost]
        if not self.seconds:
            return None
        known = max(self.seconds)
        return self.seconds[known] * 2.0 ** (cost - known)

    def padding(self, cost: int, elapsed: float) -> float:
        """How long to wait before refusing, ``elapsed`` seconds into the attempt, so that
        the refusal takes as long as a check at ``cost`` (0 before any measurement)."""
        estimate = self.estimate(cost)
        return 0.0 if estimate is None else max(0.0, estimate - elapsed)
