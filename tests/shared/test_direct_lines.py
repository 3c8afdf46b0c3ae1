"""Access lines formatted at once and queued as text (``shared.log_queue.DirectLines``):
each is the line the record path writes, and the record path is still taken whenever
the log set-up is not the standard one."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared import access_log, access_text, log_format, log_queue
from shared.access_log import AccessLogger, AccessRecord, add_log_fields
from shared.access_text import ROUTE_FIELD
from shared.log_format import make_formatter
from shared.log_queue import BatchStreamHandler, configure_logging, queued_logging
from shared.request_context import install
from tests.support.log_keeper import Keeper

AiohttpServer = Callable[..., Coroutine[Any, Any, TestServer]]
LOGGER = "test_direct_lines.access"


class Refuser(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


async def get_thing(request: web.Request) -> web.Response:
    add_log_fields(request, {"vars.name": "library/thing"})
    return web.Response(body=b"{}", headers={"Docker-Content-Digest": "sha256:" + "a" * 64})


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """configure_logging's handler, writing JSON into a string; the root logger's
    handlers and level as they were afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("info", "json", {"environment": "test"})
    (handler,) = [h for h in root.handlers if isinstance(h, BatchStreamHandler)]
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers, root.level = handlers, level


async def _get(server: TestServer, request_id: str) -> None:
    async with aiohttp.ClientSession() as session:
        url = server.make_url("/v2/library/thing/manifests/latest")
        headers = {"X-Request-Id": request_id, "User-Agent": "probe 1.0"}
        async with session.get(url, headers=headers) as response:
            assert response.status == 200
            await response.read()


async def test_direct_and_record_lines_are_the_same(
    aiohttp_server: AiohttpServer, output: io.StringIO
) -> None:
    """A line queued as text and one that went through a record say the same; a filter
    on the logger turns the direct path off (and is obeyed), removing it turns it on."""
    logger = logging.getLogger(LOGGER)
    app = web.Application()
    install(app)
    app.router.add_get("/v2/{name:.+}/manifests/{reference}", get_thing)
    server = await aiohttp_server(app, access_log=logger, access_log_class=AccessLogger)
    root = logging.getLogger()
    # As in the services: configure_logging's handler alone (not pytest's capturing ones).
    root.handlers = [h for h in root.handlers if isinstance(h, BatchStreamHandler)]
    with queued_logging():
        direct = log_queue.direct_lines
        assert direct is not None and direct.route(logger)
        await _get(server, "direct-1")
        refuser = Refuser()
        logger.addFilter(refuser)  # the record path, which the filter stops
        assert not direct.route(logger)
        await _get(server, "refused-2")
        logger.removeFilter(refuser)
        keeper = Keeper()
        logger.addHandler(keeper)  # a handler of the logger's own: the record path
        try:
            assert not direct.route(logger)
            await _get(server, "record-3")
        finally:
            logger.removeHandler(keeper)
    await server.close()
    assert log_queue.direct_lines is None  # off once the writer is stopped
    (kept,) = keeper.records
    assert isinstance(kept, AccessRecord)
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    by_id = {line.get("http.request.id"): line for line in lines}
    assert "refused-2" not in by_id
    direct_line, record_line = by_id["direct-1"], by_id["record-3"]
    for line in (direct_line, record_line):
        assert line.pop("http.response.duration").endswith(("µs", "ms", "s"))
        assert line.pop("time").endswith("Z")
        line.pop("http.request.id")
    assert direct_line == record_line
    assert list(direct_line) == list(record_line)  # and in the same order
    assert direct_line["environment"] == "test" and direct_line["vars.name"] == "library/thing"


@pytest.mark.parametrize("name", ["text", "json", "logstash"])
@pytest.mark.parametrize("static", [{}, {"region": "eu-1"}, {"vars.name": "overridden"}])
def test_info_line_is_the_formatted_record(name: str, static: dict[str, Any]) -> None:
    """``info_line`` writes what ``format`` writes for the same INFO record."""
    formatter = make_formatter(name, static)
    fields: dict[str, Any] = {
        "http.request.id": None,
        "http.request.method": "GET",
        "http.request.useragent": 'quote " and \u2028',
        "http.response.status": 200,
        "vars.name": "library/thing",
    }
    for created in (1764392400.0, 1764392400.0005, 1764392400.9995, 1764392400.9999996):
        record = logging.LogRecord(LOGGER, logging.INFO, "", 0, "response completed", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        record.fields = fields
        assert formatter.info_line(LOGGER, created, "response completed", fields) == (
            formatter.format(record)
        )


def test_cached_timestamps_are_datetimes_own() -> None:
    """The JSON time, its second's text made once, is what datetime writes, rounding of
    the microseconds into the next second included."""
    rng = random.Random(12)
    moments = [1764392399.9999996, 1764392399.9995, 1764392400.0, 1764392400.000499]
    moments += [1764392400 + rng.random() * 5 for _ in range(2000)]
    moments += [rng.choice(range(10**9, 2 * 10**9)) + 0.9999995 for _ in range(200)]
    for created in moments:
        moment = datetime.fromtimestamp(created, UTC)
        expected = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert log_format._timestamp(created) == expected, created


def test_the_line_encoder_writes_what_json_writes() -> None:
    """The JSON formats' encoder, built once, writes what ``JSONEncoder(ensure_ascii=
    False, default=str).encode`` writes, odd values included."""
    encode = log_format._line_encoder()
    reference = json.JSONEncoder(ensure_ascii=False, default=str).encode
    lines: list[dict[Any, Any]] = [
        {"msg": 'quote " backslash \\ nul \x00 line\u2028 \U0001f600', "n": -1, "big": 10**30},
        {"f": 1e-7, "inf": float("inf"), "nan": float("nan"), "t": True, "none": None},
        {"nested": {"list": [1, "x", {"k": 2}], "tuple": (1, 2)}, 3: "int key"},
        {"object": datetime(2026, 11, 29, tzinfo=UTC), "bytes": b"\xff", "set": {1}},
    ]
    for line in lines:
        assert encode(line) == reference(line)


async def _thing_server(aiohttp_server: AiohttpServer, handler: logging.Handler) -> TestServer:
    """A server of ``get_thing`` whose access lines go to ``handler``, the root logger's
    only one."""
    logger = logging.getLogger(LOGGER)
    app = web.Application()
    install(app)
    app.router.add_get("/v2/{name:.+}/manifests/{reference}", get_thing)
    server = await aiohttp_server(app, access_log=logger, access_log_class=AccessLogger)
    logging.getLogger().handlers = [handler]
    return server


@pytest.mark.parametrize("name", ["text", "json"])
async def test_access_lines_are_made_on_the_serving_thread(
    aiohttp_server: AiohttpServer,
    output: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """An access line is made on the event loop as its response completes, and the log
    writer thread only writes it: a line rendered there cost that thread (which shares
    the interpreter lock with the loop) three to four times what it costs on the loop.
    Every line is written, in the order the requests were served, by the time the
    writer stops."""
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, BatchStreamHandler))
    handler.setFormatter(make_formatter(name, {"environment": "test"}))
    formatter_class = type(handler.formatter)
    making_threads: set[int] = set()
    for method in ("info_head", "info_line"):
        original = getattr(formatter_class, method, None)
        if original is None:
            continue

        def noting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            making_threads.add(threading.get_ident())
            return _original(*args, **kwargs)

        monkeypatch.setattr(formatter_class, method, noting)
    server = await _thing_server(aiohttp_server, handler)
    ids = [f"ordered-{number}" for number in range(40)]
    try:
        with queued_logging():
            assert log_queue.direct_lines is not None
            for request_id in ids:
                await _get(server, request_id)
    finally:
        await server.close()
    assert making_threads == {threading.get_ident()}
    text = output.getvalue()
    written = re.findall(r"ordered-\d+", text)
    assert written == ids
    assert all(line.count("ordered-") == 1 for line in text.splitlines() if "ordered-" in line)


async def get_routed_thing(request: web.Request) -> web.Response:
    add_log_fields(request, {ROUTE_FIELD: "manifest", "vars.name": "library/thing"})
    return web.Response(body=b"{}")


async def test_a_route_the_service_names_is_not_looked_up(
    aiohttp_server: AiohttpServer, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that names its request's route (the registry does on every /v2/ path)
    writes that name, and the router's resource is not read for a line that would not
    show it; a request whose route the service does not name still gets the router's."""
    looked_up: list[str] = []
    real_route = access_log._route

    def noting(request: Any, request_id: str | None) -> str:
        looked_up.append(request.rel_url.path)
        return real_route(request, request_id)

    monkeypatch.setattr(access_log, "_route", noting)
    logger = logging.getLogger(LOGGER)
    app = web.Application()
    install(app)
    app.router.add_get("/v2/{name:.+}/manifests/{reference}", get_routed_thing)
    app.router.add_get("/v2/{name:.+}/tags/list", get_thing)
    server = await aiohttp_server(app, access_log=logger, access_log_class=AccessLogger)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if isinstance(h, BatchStreamHandler)]
    try:
        with queued_logging():
            await _get(server, "named-1")
            async with aiohttp.ClientSession() as session:
                url = server.make_url("/v2/library/thing/tags/list")
                async with session.get(url, headers={"X-Request-Id": "routed-2"}) as response:
                    assert response.status == 200
    finally:
        await server.close()
    assert looked_up == ["/v2/library/thing/tags/list"]
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    by_id = {line.get("http.request.id"): line for line in lines}
    assert by_id["named-1"]["http.request.route"] == "manifest"
    assert by_id["routed-2"]["http.request.route"] == "/v2/{name}/tags/list"


class CountingPattern:
    """``log_format._PLAIN`` noting every text it is asked to match."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.asked: list[str] = []

    def fullmatch(self, text: str) -> re.Match[str] | None:
        self.asked.append(text)
        return self.pattern.fullmatch(text)


async def test_a_text_access_line_matches_no_id_or_duration(
    aiohttp_server: AiohttpServer, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text format writes a request id of letters, digits and hyphens (a UUID, every
    id the services make) and a duration without matching them against the plain-token
    expression (a match per field and line); ids and durations are written as before:
    a UUID plain, another id quoted when it must be, ``µs`` durations quoted."""
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, BatchStreamHandler))
    handler.setFormatter(make_formatter("text", {}))
    counting = CountingPattern(log_format._PLAIN)
    monkeypatch.setattr(log_format, "_PLAIN", counting)
    server = await _thing_server(aiohttp_server, handler)
    try:
        with queued_logging():
            await _get(server, "5f0c3b8e-0d7b-4c52-9c1e-2a3b4c5d6e7f")
            await _get(server, "trace=7")  # '=' is not a plain token's: quoted
            async with aiohttp.ClientSession() as session:  # no id: the server makes one
                url = server.make_url("/v2/library/thing/manifests/latest")
                async with session.get(url) as response:
                    made = response.headers["X-Request-Id"]
    finally:
        await server.close()
    lines = output.getvalue().splitlines()
    assert "http.request.id=5f0c3b8e-0d7b-4c52-9c1e-2a3b4c5d6e7f " in lines[0]
    assert 'http.request.id="trace=7" ' in lines[1]
    assert f"http.request.id={made} " in lines[2]
    durations = [re.search(r"http\.response\.duration=(\S+)", line) for line in lines]
    for found in durations:
        assert found is not None
        text = found.group(1)
        assert re.fullmatch(r'"[0-9.e+-]+µs"|[0-9.e+-]+(ms|s)', text), text
    asked = set(counting.asked)
    assert not asked & {"5f0c3b8e-0d7b-4c52-9c1e-2a3b4c5d6e7f", made}
    assert not [text for text in asked if re.fullmatch(r"[0-9.e+-]+(µs|ms|s)", text)]


@pytest.mark.parametrize(
    "seconds",
    # Below, at and above each unit's bounds; a negative, NaN and infinity.
    [
        0.0,
        1e-09,
        0.000789,
        0.0009999999,
        0.001,
        0.0123456789,
        0.999999,
        1.0,
        1.5,
        12345.678,
        1000000000.0,
        -0.5,
        float("nan"),
        float("inf"),
    ],
)
def test_a_duration_is_written_as_its_text_would_be(seconds: float) -> None:
    expected = log_format.text_of_unique_string(access_text.go_duration(seconds))
    assert access_text._duration_text(seconds) == expected
