"""The access line is captured on the event loop and its fields worked out later, on the
log writer's thread: what the line says must not depend on when it is formatted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared import log_format
from shared.access_log import AccessLogger, AccessRecord, add_log_fields
from shared.log_format import make_formatter
from shared.request_context import install
from tests.support.log_keeper import Keeper

BODY = b'{"schemaVersion": 2}'


async def get_thing(request: web.Request) -> web.Response:
    add_log_fields(request, {"vars.name": "library/thing", "vars.reference": "latest"})
    return web.Response(body=BODY, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})


AiohttpServer = Callable[..., Coroutine[Any, Any, TestServer]]


async def test_fields_are_made_when_formatted_after_the_connection_is_gone(
    aiohttp_server: AiohttpServer,
) -> None:
    logger = logging.getLogger("test_access_record.access")
    keeper = Keeper()
    logger.addHandler(keeper)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        app = web.Application()
        install(app)
        app.router.add_get("/v2/{name:.+}/manifests/{reference}", get_thing, name="manifest")
        server = await aiohttp_server(app, access_log=logger, access_log_class=AccessLogger)
        headers = {"X-Request-Id": "req-1", "User-Agent": "probe 1.0", "Host": "example:5000"}
        async with aiohttp.ClientSession() as session:
            url = server.make_url("/v2/library/thing/manifests/latest?n=1")
            async with session.get(url, headers=headers) as response:
                assert await response.read() == BODY
        await server.close()  # the request, its connection and the server are gone
        (record,) = keeper.records
        assert isinstance(record, AccessRecord)
        assert record.getMessage() == "response completed"
        assert record.levelname == "INFO" and record.name == logger.name
        line = json.loads(make_formatter("json", {}).format(record))
    finally:
        logger.removeHandler(keeper)
    assert line["msg"] == "response completed" and line["level"] == "info"
    assert line["time"].endswith("Z")
    duration = line.pop("http.response.duration")
    assert duration.endswith(("ms", "µs", "s"))
    assert {key: value for key, value in line.items() if key.startswith(("http", "vars"))} == {
        "http.request.id": "req-1",
        "http.request.method": "GET",
        "http.request.uri": "/v2/library/thing/manifests/latest",  # no query string
        "http.request.route": "/v2/{name}/manifests/{reference}",
        "http.request.remoteaddr": "127.0.0.1",
        "http.request.host": "example:5000",
        "http.request.useragent": "probe 1.0",
        "http.response.status": 200,
        "http.response.written": len(BODY),
        "vars.name": "library/thing",
        "vars.reference": "latest",
    }


def test_text_values_are_quoted_as_json_strings() -> None:
    """The text format writes a value that is not a plain token as ``json.dumps`` would."""
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    values = ['a "b"', "µs", "line\nbreak", "\x00\u2028", "plain-token/1.0"]
    record.fields = {f"k{index}": value for index, value in enumerate(values)}
    line = make_formatter("text", {}).format(record)
    for index, value in enumerate(values):
        quoted = value if value == "plain-token/1.0" else json.dumps(value, ensure_ascii=False)
        assert f" k{index}={quoted}" in line


def test_values_written_before_are_remembered_within_bounds() -> None:
    """The text format remembers how it wrote repeated values, but the memory is bounded
    however many different values clients send, and long values are never kept."""
    formatter = make_formatter("text", {})
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    long_value = "agent " + "x" * (log_format._WRITTEN_LONGEST + 1)
    for index in range(3 * log_format._WRITTEN_KEPT):
        record.fields = {"ua": f"client {index}", "long": long_value}
        line = formatter.format(record)
        assert f' ua="client {index}" ' in line
        assert line.endswith(f" long={json.dumps(long_value)}")
        assert len(log_format._WRITTEN) <= log_format._WRITTEN_KEPT
    assert long_value not in log_format._WRITTEN


@pytest.mark.parametrize("name", ["text", "json", "logstash"])
@pytest.mark.parametrize("static", [{}, {"region": "eu-1"}, {"vars.name": "static wins"}])
def test_lines_without_merging_are_written_as_merged_ones(
    name: str, static: dict[str, Any]
) -> None:
    """Records whose own dict is all their fields (access lines) skip the merge into a new
    dict and, in text, logging's generic format: their lines are what the merge writes
    (read through a mapping that is not a dict, which always takes the merging path)."""
    fields: dict[str, Any] = {
        "http.request.id": None,  # a request the parser refused: no id, no field
        "http.request.method": "GET",
        "http.request.uri": "/v2/a b/manifests/\u2028",
        "http.response.status": 200,
        "ratio": 0.5,
        "flag": True,
        "listed": ["x", 1],
        "vars.name": "library/thing",
    }
    record = logging.LogRecord("registry.access", logging.INFO, "", 0, "m", None, None)
    record.fields = fields
    merged = logging.LogRecord("registry.access", logging.INFO, "", 0, "m", None, None)
    merged.created, merged.msecs = record.created, record.msecs
    merged.fields = MappingProxyType(fields)
    formatter = make_formatter(name, static)
    assert formatter.format(record) == formatter.format(merged)
    record.exc_text = merged.exc_text = "Traceback: kept below the fields"
    assert formatter.format(record) == formatter.format(merged)
