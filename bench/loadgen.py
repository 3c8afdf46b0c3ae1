"""Requests per second from C load generators, fast enough that a server is the limit.

``wrk`` (Debian package ``wrk``) for GETs: keep-alive connections driven by one epoll
thread. wrk 4.1 cannot measure HEAD (it waits for the body a HEAD response announces but
never sends: wg/wrk#198), so HEAD uses ApacheBench ``ab -k -i`` (package apache2-utils).
Any failed request fails the measurement: a rate that counts errors means nothing.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WRK = "wrk"
AB = "ab"
_WRK_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_WRK_TOTAL = re.compile(r"^\s+(\d+) requests in", re.MULTILINE)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_AB_RATE = re.compile(r"^Requests per second:\s+([0-9.]+)", re.MULTILINE)
_AB_TOTAL = re.compile(r"^Complete requests:\s+(\d+)", re.MULTILINE)
_AB_FAILED = re.compile(r"^Failed requests:\s+(\d+)", re.MULTILINE)
_AB_NON_2XX = re.compile(r"^Non-2xx responses:\s+(\d+)", re.MULTILINE)
# ab stops at whichever comes first, the time limit or this many requests.
_AB_MAX_REQUESTS = 1_000_000  # ab allocates ~50 bytes per request up front


class LoadError(RuntimeError):
    """The load generator failed, or some of its requests did."""


def missing_tools() -> list[str]:
    """The load generators this machine lacks, as Debian package names."""
    packages = {WRK: "wrk", AB: "apache2-utils"}
    return [package for tool, package in packages.items() if shutil.which(tool) is None]


@dataclass(frozen=True)
class RateResult:
    requests_per_second: float
    requests: int


def _tail(text: str) -> str:
    return text[-600:].strip()


def parse_wrk(output: str) -> RateResult:
    rate, total = _WRK_RATE.search(output), _WRK_TOTAL.search(output)
    if rate is None or total is None:
        raise LoadError(f"unexpected wrk output: {_tail(output)}")
    failed = 0
    if match := _WRK_NON_2XX.search(output):
        failed += int(match.group(1))
    if match := _WRK_SOCKET.search(output):
        # Read errors are how wrk counts connections the server closed: all count here.
        failed += sum(int(n) for n in match.groups())
    if failed:
        raise LoadError(f"wrk: {failed} failed requests: {_tail(output)}")
    return RateResult(float(rate.group(1)), int(total.group(1)))


def parse_ab(output: str) -> RateResult:
    rate, total, failed = (p.search(output) for p in (_AB_RATE, _AB_TOTAL, _AB_FAILED))
    if rate is None or total is None or failed is None:
        raise LoadError(f"unexpected ab output: {_tail(output)}")
    errors = int(failed.group(1))
    if match := _AB_NON_2XX.search(output):
        errors += int(match.group(1))
    if errors:
        raise LoadError(f"ab: {errors} failed requests: {_tail(output)}")
    return RateResult(float(rate.group(1)), int(total.group(1)))


def _header_arguments(headers: Mapping[str, str] | None) -> list[str]:
    arguments = []
    for name, value in (headers or {}).items():
        arguments += ["-H", f"{name}: {value}"]
    return arguments


async def _run(command: Sequence[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode:
        raise LoadError(f"{command[0]} exited with {process.returncode}: {_tail(text)}")
    return text


async def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    headers: Mapping[str, str] | None = None,
) -> RateResult:
    """GET ``url`` over ``connections`` keep-alive connections for ``duration`` seconds.

    One wrk thread: it drives tens of thousands of requests a second, far above what
    either registry serves here, and leaves the second core to the server.
    """
    command = [WRK, "-t1", f"-c{connections}", f"-d{max(1, duration)}s", "--timeout", "10s"]
    return parse_wrk(await _run([*command, *_header_arguments(headers), url]))


async def run_ab_head(
    url: str,
    *,
    duration: int,
    connections: int,
    headers: Mapping[str, str] | None = None,
) -> RateResult:
    """HEAD ``url`` over ``connections`` keep-alive connections for ``duration`` seconds."""
    command = [AB, "-q", "-k", "-i", f"-c{connections}", f"-t{max(1, duration)}"]
    command += ["-n", str(_AB_MAX_REQUESTS)]
    return parse_ab(await _run([*command, *_header_arguments(headers), url]))
