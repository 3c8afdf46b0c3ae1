"""The log child (``shared.log_child``): access lines made and every line written by a
process of its own, byte for byte as the serving process made them, in order, none lost on
a clean shutdown, written by the serving process again if the child is killed, and the
child gone with its parent."""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shared import log_queue
from shared.access_text import Captured, access_line
from shared.log_format import make_formatter
from shared.log_queue import BatchStreamHandler, queued_logging
from shared.request_id import RequestIdFilter
from tests.shared.test_logs import _get_many
from tests.support.portside_servers import REPOSITORY_ROOT, START_TIMEOUT, free_port, server_env
from tests.support.process_state import alive

LOGGER = "test_log_child.access"


def log_children(pid: int) -> list[int]:
    """The log child processes of ``pid`` (running ``shared/log_child.py``)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except FileNotFoundError:  # a thread that just ended
            continue
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:  # ended and reaped meanwhile
                continue
            if any(part.endswith(b"log_child.py") for part in command):
                found.append(int(child))
    return found


def the_log_child(pid: int) -> int:
    """The one log child of ``pid``, waited for: a child's command line reads empty for a
    moment after ``Popen`` returns (the exec closed the pipe ``Popen`` waits on before the
    new program's arguments are in place), so a single look can miss it."""
    deadline = time.monotonic() + 10
    while not (found := log_children(pid)):
        assert time.monotonic() < deadline, "no log child"
        time.sleep(0.01)
    (child,) = found
    return child


@pytest.fixture
def output(tmp_path: Path) -> Iterator[Path]:
    """A file the log goes to (a file descriptor, as standard error is); the root logger's
    handlers and level as they were afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield tmp_path / "log"
    finally:
        root.handlers, root.level = handlers, level


@contextmanager
def logging_to(path: Path, formatter: logging.Formatter) -> Iterator[None]:
    """configure_logging's kind of handler alone on the root logger, as in the services
    (not pytest's capturing ones), writing to ``path`` with ``formatter``, while queued."""
    with path.open("w", encoding="utf-8") as stream:
        handler = BatchStreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        with queued_logging():
            yield


def _captured(number: int, extra: dict[str, Any] | None) -> Captured:
    return (
        f"id-{number}" if number % 5 else None,  # a request the parser refused has none
        "GET",
        f"/v2/library/thing/manifests/v{number}",
        "",
        "127.0.0.1",
        "registry.example:5000",
        "probe 1.0" if number % 2 else 'docker/28 "quoted" é',
        200 if number % 3 else 404,
        402 + number,
        0.000123 * (number + 1),
        extra,
    )


@pytest.mark.parametrize("name", ["text", "json", "logstash"])
@pytest.mark.parametrize(
    "static",
    [{}, {"region": "eu-1"}, {"vars.name": "overridden"}, {"since": datetime.date(2026, 11, 30)}],
)
def test_lines_are_made_apart_as_the_loop_makes_them_in_order(
    output: Path, name: str, static: dict[str, Any]
) -> None:
    """Access lines handed to the child as their values come out as the serving process
    would have made them (the same static ``log.fields``, of any YAML type), between the
    other log lines, in the order they were logged; every one is written by the time
    logging stops, and the child has ended then."""
    path = output
    formatter = make_formatter(name, static)
    logger = logging.getLogger(LOGGER)
    extras: list[dict[str, Any] | None] = [
        None,
        {"vars.name": "library/thing"},
        {"http.request.route": "manifest", "vars.name": "library/thing"},
        {"http.response.written": 7, "vars.reference": None},
    ]
    expected = []
    with logging_to(path, formatter):
        direct = log_queue.direct_lines
        assert direct is not None and direct.apart  # fails without the log child
        child = the_log_child(os.getpid())
        for number in range(300):
            captured = _captured(number, extras[number % len(extras)])
            created = 1_796_000_000.0 + number / 1000
            direct.put((LOGGER, created, captured))
            expected.append(access_line(formatter, LOGGER, created, captured))
            if number % 50 == 0:
                logger.warning("between %d", number)
                expected.append(f"between {number}")
                if number == 100:
                    time.sleep(0.05)  # another batch, another frame
    assert not alive(child)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected)
    for line, wanted in zip(lines, expected, strict=True):
        if wanted.startswith("between "):
            assert wanted in line
        else:
            assert line == wanted


def _twenty_lines_the_eighth_with(path: Path, formatter_name: str, extra: dict[str, Any]) -> int:
    """Log twenty access lines through the log child into ``path``, the eighth with
    ``extra`` for its service's fields; the child's pid, alive after the twentieth."""
    with logging_to(path, make_formatter(formatter_name, {})):
        direct = log_queue.direct_lines
        assert direct is not None and direct.apart
        child = the_log_child(os.getpid())
        for number in range(20):
            direct.put((LOGGER, 1_796_000_000.0, _captured(number, extra if number == 7 else None)))
        time.sleep(0.2)
        assert alive(child)
    return child


def _expected(formatter_name: str, extra: dict[str, Any]) -> list[str]:
    formatter = make_formatter(formatter_name, {})
    return [
        access_line(
            formatter, LOGGER, 1_796_000_000.0, _captured(number, extra if number == 7 else None)
        )
        for number in range(20)
    ]


def test_a_value_the_pipe_cannot_carry_is_made_here(output: Path) -> None:
    """A service's field that ``marshal`` cannot write (any object): its batch's lines are
    made by the serving process, the same lines, in order."""
    extra = {"vars.when": datetime.date(2026, 11, 30)}
    _twenty_lines_the_eighth_with(output, "text", extra)
    assert output.read_text(encoding="utf-8").splitlines() == _expected("text", extra)


def test_lines_are_written_here_once_the_child_is_gone(output: Path) -> None:
    """A child killed: the log writer thread makes and writes the lines itself from then
    on, and stops as it would."""
    path = output
    formatter = make_formatter("text", {})
    with logging_to(path, formatter):
        direct = log_queue.direct_lines
        assert direct is not None and direct.apart
        child = the_log_child(os.getpid())
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        expected = []
        for number in range(50):
            captured = _captured(number, None)
            direct.put((LOGGER, 1_796_000_000.0, captured))
            expected.append(access_line(formatter, LOGGER, 1_796_000_000.0, captured))
            time.sleep(0.001)
    lines = path.read_text(encoding="utf-8").splitlines()
    # What the child had taken before the writer found it gone is lost with it; from
    # the first batch the writer could not hand over, every line is there, in order.
    assert lines and lines == expected[len(expected) - len(lines) :]
    assert len(lines) >= len(expected) - 1


def test_the_child_ends_with_its_parent(tmp_path: Path) -> None:
    """The serving process killed outright (no clean shutdown): its log child ends too."""
    program = (
        "import sys, time\n"
        "from shared.log_queue import configure_logging, queued_logging\n"
        "configure_logging('info')\n"
        "with queued_logging():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
    )
    with (tmp_path / "err").open("wb") as err:
        parent = subprocess.Popen(
            [sys.executable, "-c", program],
            cwd=REPOSITORY_ROOT,
            env=server_env(),
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
        child = the_log_child(parent.pid)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child):
            assert time.monotonic() < deadline, "the log child outlived its parent"
            time.sleep(0.01)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


_KILLED_PARENT = """
import os, signal, sys
from shared.log_child import LogChild

captured = ("id", "GET", "/v2/x/manifests/latest", "", "127.0.0.1", "h", "ua", 200, 1, 0.001, None)
child = LogChild(("text", {}, "utf-8", "backslashreplace", "\\n"), int(sys.argv[1]))
if sys.argv[2] == "held":  # a process of its own keeps the pipe's end open
    if os.fork() == 0:
        os.close(int(sys.argv[1]))
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        os.read(os.open(os.devnull, os.O_RDONLY), 1)
        signal.sigwait([signal.SIGTERM])  # until the test ends it
        os._exit(0)
for batch in range(3):
    child.send([("access", 1796000000.0 + batch, captured)] * 4096)
print(child._process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("pipe", ["alone", "held"])
def test_lines_handed_over_outlive_a_parent_killed_outright(tmp_path: Path, pipe: str) -> None:
    """The serving process killed (SIGKILL, the OOM killer): every line it had handed to
    its child is still written, and the child ends, even while another process holds the
    pipe open (the parent-death signal, not the pipe's end, tells it then). Killed by
    that signal, as children of the collection are, the child lost all 12,288."""
    log = tmp_path / "log"
    with log.open("wb") as out:
        parent = subprocess.Popen(
            [sys.executable, "-c", _KILLED_PARENT, str(out.fileno()), pipe],
            cwd=REPOSITORY_ROOT,
            env=server_env(),
            stdout=subprocess.PIPE,
            pass_fds=(out.fileno(),),
        )
    holder = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.wait(timeout=30)
        if pipe == "held":
            holder = next(
                int(pid)
                for pid in os.listdir("/proc")
                if pid.isdigit() and _parent_of(int(pid)) == 1 and _is_held_by(int(pid), parent)
            )
        deadline = time.monotonic() + 30
        while alive(child):
            assert time.monotonic() < deadline, "the log child outlived its parent"
            time.sleep(0.01)
        lines = log.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 3 * 4096
        assert all("http.request.uri=/v2/x/manifests/latest" in line for line in lines)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if holder is not None:
            os.kill(holder, signal.SIGTERM)
        assert parent.stdout is not None
        parent.stdout.close()


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _is_held_by(pid: int, parent: subprocess.Popen[bytes]) -> bool:
    """Whether ``pid`` is the pipe holder the killed ``parent`` forked (its command line)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return command.split(b"\0")[:2] == [os.fsencode(sys.executable), b"-c"] and (b"held" in command)


def test_an_access_line_the_formatter_refuses_costs_that_line_only(output: Path) -> None:
    """A value marshal carries but the formatter cannot write (a dict with a tuple for a
    key): that one line is replaced by a note, and the child goes on with the rest. It
    ended the child, and the lines of its frame with it."""
    _twenty_lines_the_eighth_with(output, "json", {"vars.name": {(1, 2): "x"}})
    lines = output.read_text(encoding="utf-8").splitlines()
    expected = _expected("json", {})
    assert len(lines) == 20 and lines[7].startswith("--- Logging error")
    assert lines[:7] + lines[8:] == expected[:7] + expected[8:]


def test_a_registry_s_access_lines_are_made_by_its_log_child(tmp_path: Path) -> None:
    """A registry in the production configuration (access log, text) has a log child
    while it serves, and every access line is written, the last ones before SIGTERM
    included."""
    port = free_port()
    env = server_env(
        {
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            "REGISTRY_LOG_LEVEL": "info",
            "REGISTRY_LOG_FORMATTER": "json",
        }
    )
    with (tmp_path / "err").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "registry", "serve"],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        requests = 200
        assert _get_many(f"http://127.0.0.1:{port}/v2/", requests, START_TIMEOUT) == requests
        child = the_log_child(process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/v2/", headers={"X-Request-Id": "the-last-one"})
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
    assert not alive(child)
    lines = [json.loads(line) for line in (tmp_path / "err").read_text().splitlines()]
    access = [line for line in lines if line.get("msg") == "response completed"]
    assert len(access) == requests + 1
    assert access[-1]["http.request.id"] == "the-last-one"
