"""``python -m bench.markdown RESULTS.json``: a run's figures as Markdown tables, so that
docs/performance.md quotes exactly what was measured."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _side(metric: dict[str, Any], server: str) -> str:
    side = metric["servers"].get(server)
    if side is None:
        reason = metric["unavailable"].get(server, "not measured")
        return "n/a" if "no token server" in reason else reason.split(":", 1)[0]
    return f"{_number(side['median'])} ({_number(side['min'])}-{_number(side['max'])})"


def _cores(metric: dict[str, Any]) -> str:
    parts = []
    for server in ("portside", metric.get("baseline", "reference")):
        side = metric["servers"].get(server) or {}
        parts.append(_number(side.get("server_cores")))
    others = [s["other_cores"] for s in metric["servers"].values() if s.get("other_cores")]
    parts.append(_number(max(others)) if others else "-")
    return " / ".join(parts)


def _disturbed(metric: dict[str, Any]) -> str:
    """Turns discarded as disturbed, by reason, and those kept disturbed (results from
    before the bench judged disturbance have neither: "-")."""
    discarded = metric.get("discarded")
    if discarded is None:
        return "-"
    reasons = ", ".join(f"{kind} {count}" for kind, count in sorted(discarded["reasons"].items()))
    text = str(discarded["turns"]) + (f" ({reasons})" if reasons else "")
    return f"{text} / {metric.get('kept_disturbed', 0)}"


def metrics_table(document: dict[str, Any]) -> str:
    lines = [
        "| scenario | unit | portside median (min-max) | reference median (min-max) "
        "| ratio p/r (per-round min-max) | peak RSS MiB p / r | cores p / r / other "
        "| rounds discarded (why) / kept disturbed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for metric in document["metrics"]:
        ratio = metric["ratio_portside_over_reference"]
        ratio_text = (
            "-"
            if ratio is None
            else (
                f"**{ratio:.2f}** ({metric['ratio_min']:.2f}-{metric['ratio_max']:.2f})"
                if metric["ratio_min"] is not None
                else f"**{ratio:.2f}**"
            )
        )
        rss = [
            (metric["servers"].get(s) or {}).get("peak_rss_mib")
            for s in ("portside", metric.get("baseline", "reference"))
        ]
        unit = metric["unit"] + ("" if metric["higher_is_better"] else ", lower is better")
        baseline = metric.get("baseline", "reference")
        other = "" if baseline == "reference" else f"{baseline}: "
        lines.append(
            f"| {metric['title']} | {unit} | {_side(metric, 'portside')} | "
            f"{other}{_side(metric, baseline)} | {ratio_text} | "
            f"{' / '.join(_number(r) for r in rss) if any(rss) else ''} | {_cores(metric)} | "
            f"{_disturbed(metric)} |"
        )
    return "\n".join(lines)


def targets_table(document: dict[str, Any]) -> str:
    lines = ["| scenario | target | measured | met |", "|---|---|---|---|"]
    for metric in document["metrics"]:
        if not metric["target"]:
            continue
        speedup, median = metric["speedup"], (metric["servers"].get("portside") or {})
        measured = (
            f"{speedup:.2f}x"
            if ("the reference" in metric["target"] or "nginx" in metric["target"]) and speedup
            else f"{_number(median.get('median'))} {metric['unit']}"
        )
        met = {True: "yes", False: "**no**", None: "-"}[metric["target_met"]]
        lines.append(f"| {metric['title']} | {metric['target']} | {measured} | {met} |")
    return "\n".join(lines)


def machine_table(document: dict[str, Any]) -> str:
    lines = ["| limit | MB/s median (min-max) |", "|---|---|"]
    for name, value in document["machine_limits"].items():
        lines.append(
            f"| {name} | {_number(value['median'])} "
            f"({_number(value['min'])}-{_number(value['max'])}) |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        print("usage: python -m bench.markdown RESULTS.json", file=sys.stderr)
        return 2
    document = json.loads(Path(arguments[0]).read_text())
    host = document["host"]
    print(
        f"Run of {document['started']} ({document['plan']['profile']} profile, "
        f"{document['duration_seconds']:.0f} s): {host['cpu']}, {host['cores']} cores, "
        f"{host['memory_gib']} GiB, Linux {host['kernel']}, Python {host['python']}, "
        f"aiohttp {host['aiohttp']}, {host['reference']}; portside "
        f"{document['portside_source'].get('commit', document['portside_source']['tree'])}; "
        f"load average at start {host['load_average'][0]:.2f}, at end "
        f"{document['load_average_at_end'][0]:.2f}.\n"
    )
    print(machine_table(document) + "\n")
    print(metrics_table(document) + "\n")
    print(targets_table(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
