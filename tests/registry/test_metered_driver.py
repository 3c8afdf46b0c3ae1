"""The metered driver reports every operation of the driver it wraps: its action, its time,
and whether it failed (a missing path is an answer, not a failure)."""

from __future__ import annotations

import pytest

from registry.storage.driver.base import PathNotFound, StorageFull
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.driver.metered import MeteredDriver
from registry.storage.driver.steps import Delete, Put

Report = tuple[str, str, float, bool]


class _FullDriver(InMemoryDriver):
    """An in-memory driver out of space for anything under /full."""

    async def put_content(self, path: str, content: bytes, *, durable: bool = True) -> None:
        if path.startswith("/full/"):
            raise StorageFull(path)
        await super().put_content(path, content, durable=durable)


def _metered() -> tuple[MeteredDriver, list[Report]]:
    reports: list[Report] = []
    return MeteredDriver(_FullDriver(), lambda *report: reports.append(report)), reports


async def test_each_operation_is_reported_with_its_outcome() -> None:
    driver, reports = _metered()
    await driver.put_content("/a/b", b"data")
    assert await driver.get_content("/a/b") == b"data"
    assert (await driver.stat("/a/b")).size == 4
    assert await driver.list_dir("/a") == ["b"]
    assert await driver.modified_many(["/a/b", "/a/none"]) == [
        (await driver.inner.stat("/a/b")).modified,
        None,
    ]
    writer = await driver.writer("/a/c")
    await writer.write(b"xy")
    await writer.write_pieces([b"z"])
    await writer.close()
    assert [chunk async for chunk in driver.reader("/a/c")] == [b"xyz"]
    await driver.move("/a/c", "/a/d")
    assert await driver.redirect_url("/a/d", "GET") is None
    assert await driver.delete_many(["/a/d"]) == [3]
    await driver.delete("/a/b")
    await driver.run_steps([Put("/a/e", b"e"), Delete("/a/e")])  # one report for them all
    actions = [(name, action, failed) for name, action, _, failed in reports]
    assert actions == [
        ("inmemory", action, False)
        for action in (
            "put_content", "get_content", "stat", "list", "modified_many", "writer", "write",
            "write",
            "close", "reader", "move", "redirect_url", "delete_many", "delete", "steps",
        )
    ]  # fmt: skip
    assert all(0 <= seconds < 60 for _, _, seconds, _ in reports)


async def test_a_missing_path_is_an_answer_and_other_errors_are_failures() -> None:
    driver, reports = _metered()
    with pytest.raises(PathNotFound):
        await driver.get_content("/missing")
    with pytest.raises(PathNotFound):
        await driver.stat("/missing")
    with pytest.raises(PathNotFound):
        [chunk async for chunk in driver.reader("/missing")]
    await driver.put_content("/file", b"x")
    with pytest.raises(StorageFull):
        await driver.put_content("/full/file", b"y")
    assert [(action, failed) for _, action, _, failed in reports] == [
        ("get_content", False),
        ("stat", False),
        ("reader", False),
        ("put_content", False),
        ("put_content", True),
    ]


async def test_a_failed_read_is_reported_as_a_failure() -> None:
    driver, reports = _metered()

    async def broken(path: str) -> bytes:
        raise StorageFull(path)  # any driver error but a missing path

    driver.inner.get_content = broken  # type: ignore[method-assign]
    with pytest.raises(StorageFull):
        await driver.get_content("/a")
    assert [(action, failed) for _, action, _, failed in reports] == [("get_content", True)]


async def test_a_read_is_timed_without_a_timer_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_content``, the storage operation of every manifest GET by tag, times itself
    in place: a ``_Timer`` made, entered and left was four Python calls per read."""
    from registry.storage.driver import metered

    class NoTimer:
        def __init__(self, *args: object) -> None:
            raise AssertionError("a _Timer was made for get_content")

    driver, reports = _metered()
    await driver.put_content("/a", b"data")
    monkeypatch.setattr(metered, "_Timer", NoTimer)
    assert await driver.get_content("/a") == b"data"
    with pytest.raises(PathNotFound):
        await driver.get_content("/missing")
    assert [(action, failed) for _, action, _, failed in reports[1:]] == [
        ("get_content", False),
        ("get_content", False),
    ]
