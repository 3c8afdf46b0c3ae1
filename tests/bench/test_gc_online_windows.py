"""How the online-collection figure is formed from its windows: busy windows between
idle ones on one server, only those wholly inside a collection counted, the median of
those against the median of the idle ones; each busy window is also shown against the
mean of its neighbours, so that a drift of the machine is visible."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.scenarios.gc_online import (
    Window,
    median_ratio,
    neighbour_ratios,
    restore,
    schedule,
)


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


def test_the_figure_counts_only_busy_windows_wholly_inside_a_collection() -> None:
    """A window whose collection ended before it did measured partly an idle registry:
    it is left out (two of three were, in the quiet run of 2026-11-29 09:36), as is one
    whose collection stopped, starved, without doing its work."""
    windows = [
        Window(False, 8000.0),
        Window(True, 7000.0),
        Window(False, 6000.0),
        Window(True, 9500.0, covered=False),  # the collection ended first
        Window(False, 7000.0),
        Window(True, 6300.0),
        Window(False, 7000.0),
        Window(True, 9900.0, stopped=True),  # starved: it lost its lease and stopped
    ]
    assert median_ratio(windows) == pytest.approx(100.0 * 6650.0 / 7000.0)
    assert median_ratio([Window(False, 8000.0), Window(True, 1.0, covered=False)]) is None


def test_restore_links_back_only_what_is_missing(tmp_path: Path) -> None:
    """After a collection the store is put back from the seed: deleted files and
    directories return as hard links of the seed's, and what the store has of its own
    (files present, or not in the seed) is left as it is."""
    seeded, root = tmp_path / "seed", tmp_path / "root"
    for relative in ("blobs/ab/abc/data", "blobs/cd/cde/data", "repos/r/_layers/abc/link"):
        (seeded / relative).parent.mkdir(parents=True, exist_ok=True)
        (seeded / relative).write_text(relative)
    shutil.copytree(seeded, root, copy_function=os.link)
    shutil.rmtree(root / "blobs/cd")  # what a collection deleted
    (root / "repos/r/_layers/abc/link").unlink()
    (root / "blobs/ab/abc/lastref").write_text("mine")  # the store's own, not the seed's
    assert restore(seeded, root) == 2
    for relative in ("blobs/cd/cde/data", "repos/r/_layers/abc/link"):
        assert os.path.samefile(seeded / relative, root / relative)
    assert (root / "blobs/ab/abc/lastref").read_text() == "mine"
    assert restore(seeded, root) == 0
