"""The results of a run: a table on stdout, a JSON file, and a PNG plot of the ratios."""

from __future__ import annotations

import importlib
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import Metric
from bench.servers import PORTSIDE, REFERENCE

_TICKS = (0.1, 0.2, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _side(metric: Metric, server: str) -> str:
    values = metric.values.get(server)
    if not values:
        reason = metric.unavailable.get(server, "not measured")
        return "n/a (" + reason.split(":", 1)[0] + ")"
    return f"{_number(metric.median(server))} [{_number(min(values))}-{_number(max(values))}]"


def _rss(metric: Metric) -> str:
    peaks = [
        max(metric.peak_rss_mib[s]) if metric.peak_rss_mib.get(s) else None
        for s in (PORTSIDE, metric.baseline)
    ]
    if peaks == [None, None]:
        return ""
    return "/".join(_number(p) for p in peaks)


def _cores(metric: Metric) -> str:
    """CPU cores used by portside / the baseline / everything else, medians of the rounds:
    a large 'other' means the machine was busy with other work during the measurement."""
    if not metric.cores:
        return ""
    servers = [
        statistics.median(metric.cores[s]) if metric.cores.get(s) else None
        for s in (PORTSIDE, metric.baseline)
    ]
    other = [v for values in metric.other_cores.values() for v in values]
    return "/".join(_number(v) for v in [*servers, statistics.median(other) if other else None])


def _others(metric: Metric) -> str:
    """The servers measured beside portside and the baseline (the reference; for pulls a
    second nginx, whose ratio to the first is the run's noise floor), each with its ratio
    to the baseline as the table's (of the medians [per-round min-max])."""
    parts = [f"{REFERENCE}: {_side(metric, REFERENCE)}"]
    baseline = metric.values.get(metric.baseline, [])
    for server, values in metric.values.items():
        if server in (PORTSIDE, metric.baseline, REFERENCE):
            continue
        text = f"{server}: {_side(metric, server)}"
        ratios = [a / b for a, b in zip(values, baseline, strict=False) if b]
        theirs = metric.median(metric.baseline)
        if ratios and theirs:
            text += (
                f", {statistics.median(values) / theirs:.2f}x {metric.baseline}"
                f" [{min(ratios):.2f}-{max(ratios):.2f}]"
            )
        parts.append(text)
    return "; ".join(parts)


def format_table(metrics: Sequence[Metric]) -> str:
    header = (
        f"{'metric':58} {'unit':10} {'portside median [min-max]':27} "
        f"{'baseline median [min-max]':27} {'p/b [min-max]':20} {'target':34} "
        f"{'met':4} {'RSS MiB p/r':12} {'cores p/r/other':15}"
    )
    lines: list[str] = []
    group = None
    for metric in metrics:
        if metric.group != group:
            group = metric.group
            lines += ["", f"== {group} ==", header]
        ratios = metric.round_ratios()
        ratio = metric.ratio()
        ratio_text = (
            "-"
            if ratio is None
            else (
                f"{ratio:.2f} [{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else f"{ratio:.2f}"
            )
        )

        met = {True: "yes", False: "NO", None: "-"}[metric.target_met()]
        unit = metric.unit + ("" if metric.higher_is_better else " (low)")
        lines.append(
            f"{metric.title[:58]:58} {unit:10} {_side(metric, PORTSIDE):27} "
            f"{_side(metric, metric.baseline):27} {ratio_text:20} "
            f"{(metric.target.text if metric.target else ''):34} {met:4} {_rss(metric):12} "
            f"{_cores(metric):15}"
        )
        if metric.baseline != REFERENCE:  # the others too, for context; ratio over baseline
            lines.append(f"    (baseline: {metric.baseline}; {_others(metric)})")
        if len(ratios) > 1:  # each round's ratio is of adjacent samples
            lines.append(f"    median of the rounds' ratios: {statistics.median(ratios):.2f}")
        if metric.disturbance_text():
            lines.append(f"    {metric.disturbance_text()}")
        for server, reason in metric.unavailable.items():
            lines.append(f"    {server}: {reason[:300]}")
    return "\n".join(lines)


def format_machine(limits: dict[str, Any]) -> str:
    lines = ["== machine and client limits (MB/s) =="]
    for name, value in limits.items():
        lines.append(
            f"{name:34} {_number(value['median']):>10} "
            f"[{_number(value['min'])}-{_number(value['max'])}]"
        )
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def plot(path: Path, metrics: Sequence[Metric], title: str) -> bool:
    """A bar per metric measured on both: how many times better portside is (log scale),
    the per-round range as an error bar, the issue's target as a mark. False without
    matplotlib (the optional extra ``bench``)."""
    try:
        # Imported by name: matplotlib is an optional extra, absent where mypy runs in CI.
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
        formatter: Any = importlib.import_module("matplotlib.ticker").FuncFormatter
    except ImportError:
        return False
    shown = [m for m in metrics if m.plotted and m.speedup() is not None]
    if not shown:
        return False
    figure, axes = plt.subplots(figsize=(10, 1.2 + 0.38 * len(shown)))
    positions = list(range(len(shown)))[::-1]
    speedups = [m.speedup() or 0.0 for m in shown]
    lows, highs = [], []
    for metric, speedup in zip(shown, speedups, strict=True):
        rounds = [metric.speedup(r) or speedup for r in metric.round_ratios()] or [speedup]
        lows.append(max(0.0, speedup - min(rounds)))
        highs.append(max(0.0, max(rounds) - speedup))
    colours = ["tab:green" if s >= 1 else "tab:red" for s in speedups]
    # Bars grow from 1x, left for worse, right for better; the whisker is centred on the end.
    axes.barh(positions, [s - 1 for s in speedups], left=1, color=colours, alpha=0.75)
    axes.errorbar(
        speedups, positions, xerr=[lows, highs], fmt="none", ecolor="black", capsize=3, linewidth=1
    )
    for position, metric in zip(positions, shown, strict=True):
        if metric.target is not None and metric.target.min_speedup is not None:
            axes.plot(
                [metric.target.min_speedup] * 2,
                [position - 0.4, position + 0.4],
                color="black",
                linewidth=2,
            )
    for position, speedup, high in zip(positions, speedups, highs, strict=True):
        # Right of the bar and its whisker, wherever they end, so that nothing overlaps.
        axes.annotate(
            f"{speedup:.2f}x",
            (max(speedup + high, 1.0), position),
            xytext=(4, -3),
            textcoords="offset points",
            fontsize=8,
        )
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xscale("log")
    low, high = axes.get_xlim()
    axes.set_xticks([t for t in _TICKS if low <= t <= high])
    axes.xaxis.set_major_formatter(formatter(lambda value, _: f"{value:g}x"))
    axes.xaxis.set_minor_formatter(formatter(lambda value, _: ""))
    axes.set_yticks(positions, [m.title for m in shown], fontsize=8)
    axes.set_xlabel(
        "times better than the reference registry (right of 1x: portside better; latencies "
        "and memory inverted)\nbar: ratio of the medians; whisker: per-round range; "
        "black mark: the issue's target",
        fontsize=8,
    )
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
