"""Disturbed rounds are discarded and measured again, and the report says how many and why.

On the benchmark's VM an unchanged server's throughput drifted by a third between the
windows of one run; each measured round now carries its steal, others' CPU and a
machine-speed probe (``bench.disturbance``), and a round above the thresholds is measured
again, a bounded number of times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench import procstat
from bench.disturbance import (
    OTHERS,
    SLOW,
    STEAL,
    Disturbance,
    Judge,
    SpeedSampler,
    Thresholds,
    probe,
)
from bench.markdown import metrics_table
from bench.measure import Lab, Step, alternate, repeat_disturbed
from bench.report import format_table
from bench.results import Metric, Sample
from bench.scenarios.gc_online import Window, steady_window
from bench.servers import PORTSIDE, REFERENCE, Server, registry_server
from tests.support.tools import require_tool

QUIET = Disturbance(steal=0.0, other_cores=0.01, speed=0.97)
BUSY = Disturbance(steal=0.0, other_cores=0.8, speed=0.97)  # another engineer's tests
STOLEN = Disturbance(steal=0.05, other_cores=0.0, speed=0.6)  # the host took the CPU


def sample(value: float, disturbance: Disturbance) -> Sample:
    return Sample(
        value=value,
        peak_rss_mib=50.0,
        server_cores=1.0,
        client_cores=0.1,
        other_cores=disturbance.other_cores,
        steal=disturbance.steal,
        speed=disturbance.speed,
    )


def test_the_judge_names_each_disturbance_above_its_threshold() -> None:
    judge = Judge(Thresholds(max_steal=0.02, max_other_cores=0.10, min_speed=0.85))
    assert judge.reasons(QUIET) == []
    assert judge.reasons(BUSY) == [f"{OTHERS}: 0.80 cores"]
    assert judge.reasons(STOLEN) == [f"{STEAL}: 5.0%", f"{SLOW}: 60% of the best"]


def test_a_share_within_the_kernels_counting_is_not_judged() -> None:
    """/proc/stat counts 10 ms ticks: in a 50 ms pull, one tick of another process reads
    0.2 cores; a share is judged only above two ticks' worth."""
    judge = Judge()
    one_tick = Disturbance(steal=0.1, other_cores=0.2, speed=0.97, seconds=0.05)
    assert judge.reasons(one_tick) == []
    long = Disturbance(steal=0.1, other_cores=0.2, speed=0.97, seconds=3.0)
    assert [r.split(":")[0] for r in judge.reasons(long)] == [STEAL, OTHERS]


def test_the_probe_measures_every_core_and_gives_the_thread_its_cores_back() -> None:
    allowed = os.sched_getaffinity(0)
    judge = Judge()
    speed = judge.probe()
    assert speed > 0 and judge.best >= speed
    assert os.sched_getaffinity(0) == allowed
    assert 0 < judge.speed((speed, probe())) <= 1.0
    with SpeedSampler() as during:
        time.sleep(0.5)  # about five probes of each core
    window = during.speed()
    assert window is not None and window > 0
    assert os.sched_getaffinity(0) == allowed  # the sampler pinned its own thread only
    assert judge.speed((None, None)) == 1.0  # no probe taken: nothing to judge by


async def test_a_disturbed_round_is_dropped_and_measured_again() -> None:
    metric = Metric("manifest_get", "manifest GET", "requests/s", "2.")
    turns = iter(
        [
            {PORTSIDE: sample(2203.0, BUSY), REFERENCE: sample(900.0, QUIET)},
            {PORTSIDE: sample(4100.0, STOLEN), REFERENCE: sample(880.0, STOLEN)},
            {PORTSIDE: sample(4300.0, QUIET), REFERENCE: sample(860.0, QUIET)},
        ]
    )
    measured = 0

    async def turn() -> dict[str, Sample]:
        nonlocal measured
        measured += 1
        return next(turns)

    kept = await repeat_disturbed(Judge(), metric, turn, retries=3)

    assert measured == 3
    assert {name: s.value for name, s in kept.items()} == {PORTSIDE: 4300.0, REFERENCE: 860.0}
    assert metric.discarded_turns == 2
    assert metric.discarded == {OTHERS: 1, STEAL: 1, SLOW: 1}
    assert metric.kept_disturbed == 0
    assert "discarded and measured again: 2 (" in metric.disturbance_text()


async def test_the_repeats_are_bounded_and_the_last_turn_is_kept_marked() -> None:
    metric = Metric("manifest_get", "manifest GET", "requests/s", "2.")
    measured = 0

    async def turn() -> dict[str, Sample]:
        nonlocal measured
        measured += 1
        return {PORTSIDE: sample(float(measured), BUSY)}

    kept = await repeat_disturbed(Judge(), metric, turn, retries=2)

    assert measured == 3 and kept[PORTSIDE].value == 3.0
    assert (metric.discarded_turns, metric.kept_disturbed) == (2, 1)
    assert metric.disturbance_text().endswith("kept disturbed: 1")


async def test_an_online_collection_window_is_measured_again_when_disturbed() -> None:
    metric = Metric("gc_online_get", "online", "%", "6.")
    windows = iter([Window(False, 4552.0, disturbed=(f"{SLOW}: 70% of the best",))])
    windows = iter([*windows, Window(False, 7100.0)])

    async def measure() -> Window:
        return next(windows)

    window = await steady_window(Judge(), metric, measure, retries=3)

    assert window.rate == 7100.0
    assert (metric.discarded_turns, metric.discarded) == (1, {SLOW: 1})


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Lab, list[Server]]]:
    """portside and the reference registry, started as the benchmark starts them."""
    require_tool("docker-registry")
    lab = Lab()
    servers = []
    try:
        for name in (PORTSIDE, REFERENCE):
            (tmp_path / name).mkdir()
            server = registry_server(name, tmp_path / name, tmp_path / name / "root")
            servers.append(await lab.start(server))
        yield lab, servers
    finally:
        await lab.stop_all()


async def test_rounds_alternate_a_b_then_b_a_and_a_disturbed_turn_is_measured_again(
    pair: tuple[Lab, list[Server]],
) -> None:
    """Against real servers: with a judge to which every round is disturbed (a probe
    below 200% of the best), each turn is measured 1 + retries times, then kept and counted; with
    one to which nothing is, once. Either way the order reverses every other round."""
    lab, servers = pair
    served: list[str] = []

    async def get_base(server: Server) -> float:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}/v2/") as response,
        ):
            assert response.status == 200
        served.append(server.name)
        return 100.0

    metric = Metric("base", "GET /v2/", "requests/s", "test")
    lab.judge = Judge(Thresholds(max_steal=1.0, max_other_cores=float("inf"), min_speed=2.0))
    await alternate(lab, servers, 2, [Step(metric, get_base)], retries=2)

    a_b, b_a = [PORTSIDE, REFERENCE], [REFERENCE, PORTSIDE]
    assert served == a_b * 3 + b_a * 3
    assert (metric.discarded_turns, metric.kept_disturbed) == (4, 2)
    assert metric.discarded == {SLOW: 4}
    assert metric.values == {PORTSIDE: [100.0, 100.0], REFERENCE: [100.0, 100.0]}
    summary = metric.summary()
    assert summary["discarded"] == {"turns": 4, "reasons": {SLOW: 4}}
    assert summary["kept_disturbed"] == 2
    assert "discarded and measured again: 4 (slow probe 4); kept disturbed: 2" in format_table(
        [metric]
    )

    served.clear()
    calm = Metric("base", "GET /v2/", "requests/s", "test")
    lab.judge = Judge(Thresholds(max_steal=1.0, max_other_cores=float("inf"), min_speed=0.0))
    await alternate(lab, servers, 2, [Step(calm, get_base)], retries=2)
    assert served == a_b + b_a
    assert (calm.discarded_turns, calm.kept_disturbed) == (0, 0)
    assert "discarded" not in format_table([calm])


def test_the_busiest_other_processes_are_named_and_ours_left_out(tmp_path: Path) -> None:
    """A busy process of a name of its own (the command name of a link to the
    interpreter) is named with its share of a core; left out when it is ours."""
    burner_path = tmp_path / "busy-neighbour"
    burner_path.symlink_to(sys.executable)
    burner = subprocess.Popen([str(burner_path), "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started: its interpreter's start-up is not the half second below
        before = procstat.every_process_cpu()
        time.sleep(0.5)
        after = procstat.every_process_cpu()
    finally:
        burner.kill()
        burner.wait()
    assert after[burner.pid].name == "busy-neighbour" and not after[burner.pid].kernel
    assert after[2].kernel and after[2].name == "kthreadd"  # and its children are too
    others = procstat.busiest_others(before, after, set(), 0.5, count=1000)
    assert "busy-neighbour " in others, others  # a share of a core, whatever else ran
    assert "busy-neighbour" not in procstat.busiest_others(
        before, after, {burner.pid}, 0.5, count=1000
    )


async def test_an_online_window_records_how_often_it_was_measured() -> None:
    """gc_online gives busy windows a run-wide budget of repeats (each needs garbage of
    its own): a window says how many attempts it took, so the budget can be spent."""
    metric = Metric("gc_online_get", "online", "%", "6.")
    windows = iter([Window(True, 1.0, disturbed=(f"{OTHERS}: 0.50 cores",))] * 2)

    async def measure() -> Window:
        return next(windows)

    window = await steady_window(Judge(), metric, measure, retries=1)
    assert window.attempts == 2 and window.disturbed  # kept disturbed, budget spent
    assert (metric.discarded_turns, metric.kept_disturbed) == (1, 1)


def test_the_markdown_tables_quote_the_discarded_rounds() -> None:
    metric = Metric("manifest_get", "manifest GET by tag", "requests/s", "2.")
    for server, value in ((PORTSIDE, 4300.0), (REFERENCE, 900.0)):
        metric.add(server, sample(value, QUIET))
    metric.discard([f"{OTHERS}: 0.80 cores (python 0.79)", f"{SLOW}: 70% of the best"])
    metric.keep_disturbed()
    [row] = [line for line in metrics_table({"metrics": [metric.summary()]}).splitlines()[2:]]
    assert row.endswith("| 1 (others' CPU 1, slow probe 1) / 1 |"), row


def test_a_process_is_known_by_its_start_time_not_its_name() -> None:
    """A kworker's name changes with the work it runs: counted by name, one renamed
    between two readings added its whole life's CPU (0.3-0.7 cores of "kernel threads"
    in 3 s windows where each used at most 0.02); a reused pid is a new process."""
    worker = procstat.ProcessCpu("kworker/u8:4-kvfree_rcu_reclaim", 500.0, True, 1000)
    renamed = procstat.ProcessCpu("kworker/u8:4-ext4-rsv-conversion", 500.02, True, 1000)
    reused = procstat.ProcessCpu("python", 0.5, False, 9000)
    before = {7: worker, 8: worker}
    after = {7: renamed, 8: reused}
    assert procstat.kernel_threads_seconds(before, after) == pytest.approx(0.02)
    assert procstat.busiest_others(before, after, set(), 1.0) == "python 0.50"


def test_a_helpers_cpu_counts_its_children_that_ended_during_the_window() -> None:
    """A collection's walk runs in a child that may end inside a window: its CPU then
    sits in its parent's cutime, and counting only the live processes lost it (it went
    to others' CPU and the window was discarded as disturbed)."""
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    helper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\n"
            f"subprocess.run([sys.executable, '-c', {spin!r}])\ntime.sleep(30)\n",
        ]
    )
    try:
        before = procstat.cpu_seconds(helper.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(procstat.process_tree(helper.pid)) < 2:
            time.sleep(0.01)  # the child started
        while time.monotonic() < deadline and len(procstat.process_tree(helper.pid)) > 1:
            time.sleep(0.01)  # and ended, reaped by the helper
        assert procstat.cpu_seconds(helper.pid) - before >= 0.25
    finally:
        helper.kill()
        helper.wait()
