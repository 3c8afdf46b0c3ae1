"""Equal refusal times: a wrong password must take as long as an unknown user.

Users files may mix bcrypt costs (Apache's ``htpasswd -B`` writes cost 5, ``registry
htpasswd`` cost 10), and a bcrypt check takes time in proportion to ``2**cost``. Unknown
users are checked against a dummy hash at the highest cost present; every refusal is then
padded, by sleeping rather than hashing, to the time a check at that cost takes now. That
time is estimated from the checks themselves (seconds per ``2**cost`` rounds, smoothed), so
it follows the machine's load as the real checks do.
"""

from __future__ import annotations

SMOOTHING = 0.2  # weight of the newest measurement: follows load within a few checks


class RefusalTimer:
    """A running estimate of bcrypt's speed, and the padding a refusal needs."""

    def __init__(self) -> None:
        self.seconds_per_round: float | None = None

    def record(self, cost: int, seconds: float) -> None:
        """Learn from one bcrypt check at ``cost`` that took ``seconds``."""
        measured = seconds / (1 << cost)
        previous = self.seconds_per_round
        self.seconds_per_round = (
            measured if previous is None else previous + SMOOTHING * (measured - previous)
        )

    def padding(self, cost: int, elapsed: float) -> float:
        """How long to wait before refusing, ``elapsed`` seconds into the attempt, so that
        the refusal takes as long as a check at ``cost`` (0 before any measurement)."""
        if self.seconds_per_round is None:
            return 0.0
        return max(0.0, self.seconds_per_round * (1 << cost) - elapsed)
