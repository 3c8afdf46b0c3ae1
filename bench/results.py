"""What a run measured: per metric and server, one value per round, summarised honestly.

A summary is the median of each server's rounds, the ratio of the medians
(portside/reference, or portside/``baseline`` where a metric names another baseline, such
as nginx for pulls; the JSON key keeps its name), and the spread of the per-round ratios
(min-max). ``speedup`` turns every ratio into "times better" (latencies are inverted) so
one plot can show them all.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.disturbance import Disturbance
from bench.servers import PORTSIDE, REFERENCE


@dataclass(frozen=True)
class Target:
    """A goal from the issue: a minimum speed-up over the reference, or an absolute floor."""

    text: str
    min_speedup: float | None = None
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Sample:
    """One measurement of one server, with what the machine did meanwhile (in cores)."""

    value: float
    peak_rss_mib: float
    server_cores: float
    client_cores: float
    other_cores: float  # everything else on the machine: other users' work is noise
    steal: float = 0.0  # share of the cores' time the hypervisor stole meanwhile
    speed: float = 1.0  # the machine-speed probes around it against the run's best
    busiest_others: str = ""  # the other processes that used the most CPU meanwhile
    seconds: float = 0.0  # how long it took (0: not recorded)
    kernel_cores: float = 0.0  # the kernel's threads (not counted in other_cores)

    @property
    def disturbance(self) -> Disturbance:
        return Disturbance(
            self.steal, self.other_cores, self.speed, self.busiest_others, self.seconds
        )


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Metric:
    key: str
    title: str
    unit: str
    group: str
    higher_is_better: bool = True
    target: Target | None = None
    values: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_mib: dict[str, list[float]] = field(default_factory=dict)
    cores: dict[str, list[float]] = field(default_factory=dict)
    client_cores: dict[str, list[float]] = field(default_factory=dict)
    other_cores: dict[str, list[float]] = field(default_factory=dict)
    steal: dict[str, list[float]] = field(default_factory=dict)
    speed: dict[str, list[float]] = field(default_factory=dict)
    # Turns measured and discarded as disturbed, by reason ("steal", "others' CPU", "slow
    # probe"; a turn may count under several), and turns kept disturbed (no retry left).
    discarded: dict[str, int] = field(default_factory=dict)
    discarded_turns: int = 0
    kept_disturbed: int = 0
    unavailable: dict[str, str] = field(default_factory=dict)  # server → why not measured
    note: str = ""
    plotted: bool = True  # False for figures whose ratio between servers says nothing
    baseline: str = REFERENCE  # the server portside is compared with (nginx for pulls)

    def add(self, server: str, sample: Sample) -> None:
        self.values.setdefault(server, []).append(sample.value)
        self.peak_rss_mib.setdefault(server, []).append(sample.peak_rss_mib)
        self.cores.setdefault(server, []).append(sample.server_cores)
        self.client_cores.setdefault(server, []).append(sample.client_cores)
        self.other_cores.setdefault(server, []).append(sample.other_cores)
        self.steal.setdefault(server, []).append(sample.steal)
        self.speed.setdefault(server, []).append(sample.speed)

    def discard(self, reasons: list[str]) -> None:
        """One measured turn dropped for ``reasons`` (``bench.disturbance`` texts)."""
        self.discarded_turns += 1
        for kind in sorted({reason.split(":", 1)[0] for reason in reasons}):
            self.discarded[kind] = self.discarded.get(kind, 0) + 1

    def keep_disturbed(self) -> None:
        self.kept_disturbed += 1

    def disturbance_text(self) -> str:
        """What the report says about discarded turns; empty when none was disturbed."""
        if not self.discarded_turns and not self.kept_disturbed:
            return ""
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.discarded.items()))
        text = f"discarded and measured again: {self.discarded_turns}"
        text += f" ({kinds})" if kinds else ""
        if self.kept_disturbed:
            text += f"; kept disturbed: {self.kept_disturbed}"
        return text

    def add_value(self, server: str, value: float) -> None:
        """A value derived from other metrics, with no process figures of its own."""
        self.values.setdefault(server, []).append(value)

    def median(self, server: str) -> float | None:
        return _median(self.values.get(server))

    def ratio(self) -> float | None:
        """portside / the baseline, of the medians, in the metric's own unit."""
        mine, theirs = self.median(PORTSIDE), self.median(self.baseline)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    def round_ratios(self) -> list[float]:
        mine, theirs = self.values.get(PORTSIDE, []), self.values.get(self.baseline, [])
        return [a / b for a, b in zip(mine, theirs, strict=False) if b]

    def speedup(self, ratio: float | None = None) -> float | None:
        """How many times better portside is (>1: better), whatever the metric's direction."""
        ratio = self.ratio() if ratio is None else ratio
        if ratio is None or ratio == 0:
            return None
        return ratio if self.higher_is_better else 1 / ratio

    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        if self.target.min_speedup is not None:
            speedup = self.speedup()
            return None if speedup is None else speedup >= self.target.min_speedup
        value = self.median(PORTSIDE)
        if value is None:
            return None
        if self.target.min_value is not None and value < self.target.min_value:
            return False
        return not (self.target.max_value is not None and value > self.target.max_value)

    def summary(self) -> dict[str, Any]:
        servers: dict[str, Any] = {}
        for server, values in self.values.items():
            servers[server] = {
                "rounds": values,
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "peak_rss_mib": max(self.peak_rss_mib[server])
                if self.peak_rss_mib.get(server)
                else None,
                "server_cores": _median(self.cores.get(server)),
                "client_cores": _median(self.client_cores.get(server)),
                "other_cores": _median(self.other_cores.get(server)),
                "steal": _median(self.steal.get(server)),
                "speed_min": min(self.speed[server]) if self.speed.get(server) else None,
            }
        round_ratios = self.round_ratios()
        return {
            "key": self.key,
            "title": self.title,
            "group": self.group,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "servers": servers,
            "unavailable": self.unavailable,
            "baseline": self.baseline,
            "ratio_portside_over_reference": self.ratio(),
            "ratio_min": min(round_ratios) if round_ratios else None,
            "ratio_max": max(round_ratios) if round_ratios else None,
            # Each round's ratio is of adjacent samples (A B, then B A): their median is
            # the figure least moved by a drift between rounds.
            "round_ratios": round_ratios,
            "ratio_rounds_median": _median(round_ratios),
            "discarded": {"turns": self.discarded_turns, "reasons": self.discarded},
            "kept_disturbed": self.kept_disturbed,
            "speedup": self.speedup(),
            "target": self.target.text if self.target else None,
            "target_met": self.target_met(),
            "note": self.note,
        }
