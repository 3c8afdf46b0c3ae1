"""``tokenauth serve --workers N``: N processes on one port, a dead one replaced, their
metrics summed in one scrape, SIGTERM stopping them all."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.logins import basic
from tests.support.metrics import scrape
from tests.support.portside_servers import free_port, tokenauth_process
from tests.support.supervised import children, wait_for, wait_for_replacement, wait_for_workers
from tests.tokenauth.conftest import SERVICE, USERS, write_setup

WORKERS = 2


def login(url: str) -> int:
    """One token request on a new connection (the kernel spreads those over workers)."""
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{url}/auth?service={SERVICE}", headers=basic("alice", USERS["alice"])
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def granted(metrics_url: str) -> float:
    return scrape(metrics_url).value(
        "tokenauth_token_requests_total", outcome="granted", grant_type="basic"
    )


def test_workers_serve_one_port_sum_their_metrics_and_are_replaced(tmp_path: Path) -> None:
    setup = write_setup(tmp_path)
    debug_port = free_port()
    tmpdir = tmp_path / "tmp"  # where the supervisor makes its metrics directory
    tmpdir.mkdir()
    server = tokenauth_process(
        tmp_path,
        setup.config,
        "--workers",
        str(WORKERS),
        TOKENAUTH_HTTP_DEBUG_ADDR=f"127.0.0.1:{debug_port}",
        TOKENAUTH_HTTP_DEBUG_PROMETHEUS_ENABLED="true",
        TMPDIR=str(tmpdir),
    )
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server.start()
    metrics_url = f"http://127.0.0.1:{debug_port}/metrics"
    try:
        assert server.process is not None
        supervisor = server.process.pid
        wait_for_workers(supervisor, WORKERS)
        # Each on uvloop's event loop: asyncio's own cost a quarter of a token's CPU time.
        wait_for("both on uvloop", lambda: server.log().count("(http, uvloop)") == WORKERS)
        logins = 40
        assert [login(server.url) for _ in range(logins)] == [200] * logins
        # Every worker's counts, whichever answers the scrape.
        [samples] = list(tmpdir.glob("portside-metrics-*"))
        writers = {p.name.rsplit("_", 1)[-1].removesuffix(".db") for p in samples.iterdir()}
        assert {str(pid) for pid in children(supervisor)} <= writers  # both served
        wait_for(f"{logins} logins in the scrape", lambda: granted(metrics_url) == logins)

        victim = max(children(supervisor))
        os.kill(victim, signal.SIGKILL)
        wait_for_replacement(supervisor, victim, WORKERS)
        assert [login(server.url) for _ in range(10)] == [200] * 10
        wait_for("counts kept across the replacement", lambda: granted(metrics_url) == logins + 10)
    finally:
        assert server.stop() == 0  # SIGTERM stops every worker, then the supervisor
    assert not list(tmpdir.iterdir())  # the metrics directory is removed at exit


def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """A SIGKILLed (or OOM-killed) supervisor cannot stop its workers: the kernel does
    (``PR_SET_PDEATHSIG``), or they would serve on, unsupervised, holding the port."""
    setup = write_setup(tmp_path)
    server = tokenauth_process(tmp_path, setup.config, "--workers", str(WORKERS))
    server.start()
    workers: set[int] = set()
    try:
        assert server.process is not None
        supervisor = server.process.pid
        wait_for_workers(supervisor, WORKERS)
        workers = children(supervisor)
        os.kill(supervisor, signal.SIGKILL)
        server.process.wait()
        wait_for("the workers to die", lambda: not any(_alive(pid) for pid in workers), 10.0)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.stop()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
