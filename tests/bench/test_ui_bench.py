"""``python -m bench.ui_pages`` at a tiny scale: it seeds, serves and times every page
(the figures mean nothing here; docs/ui.md has a real run's)."""

from __future__ import annotations

from tests.support.portside_servers import run_python_module


def test_the_ui_page_benchmark_times_every_page() -> None:
    table = run_python_module(
        "bench.ui_pages", "--tags", "60", "--repositories", "60", "--rounds", "1"
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| tags, first page (50 of 60)",
        "| tags, a middle page",
        "| tags, newest-name first",
        "| repositories, first page (50 of 60)",
        "| repositories, a middle page",
        "| repositories, filtered by prefix",
    ]
