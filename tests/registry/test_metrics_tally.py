"""The tallies add up exactly as prometheus-client's own calls would have counted."""

from __future__ import annotations

import io

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from registry.metrics_tally import HistogramTally, RequestTally
from registry.request_metrics import _sent

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# On a bound ("le" includes it), between bounds, below the first, above the last.
VALUES = (0.0, 0.001, 0.0010001, 0.01, 0.05, 0.1, 1.0, 1.5, 100.0)


def _samples(registry: CollectorRegistry) -> list[str]:
    """The exposition without the ``_created`` times (when each registry was made)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def _histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("t_seconds", "t", ["a"], buckets=BUCKETS, registry=registry)


def test_a_flushed_histogram_tally_equals_observing_each_value() -> None:
    expected_registry, expected = _histogram()
    actual_registry, actual = _histogram()
    tally = HistogramTally(actual, BUCKETS)
    for value in VALUES:
        expected.labels("x").observe(value)
        tally.observe(("x",), value)
    tally.flush()
    tally.flush()  # a second flush adds nothing
    assert _samples(actual_registry) == _samples(expected_registry)


def test_a_request_tally_splits_into_counter_histogram_and_bytes() -> None:
    expected_registry, actual_registry = CollectorRegistry(), CollectorRegistry()

    def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Counter, Counter]:
        return (
            Counter("r", "r", ["route", "method", "code"], registry=registry),
            Histogram("d_seconds", "d", ["route", "method"], buckets=BUCKETS, registry=registry),
            Counter("in_bytes", "i", ["route"], registry=registry),
            Counter("out_bytes", "o", ["route"], registry=registry),
        )

    requests, durations, received, sent = metrics(expected_registry)
    tally_metrics = metrics(actual_registry)
    tally = RequestTally(
        requests=tally_metrics[0],
        durations=tally_metrics[1],
        buckets=BUCKETS,
        received=tally_metrics[2],
        sent=tally_metrics[3],
    )
    answered = [("blob", "GET", "200", 0.5, 0, 100), ("blob", "GET", "404", 0.002, 0, 0)]
    answered += [("upload", "PUT", "201", 1.5, 4096, 0)] * 3
    for route, method, code, seconds, inbound, outbound in answered:
        requests.labels(route, method, code).inc()
        durations.labels(route, method).observe(seconds)
        if inbound:
            received.labels(route).inc(inbound)
        if outbound:
            sent.labels(route).inc(outbound)
        tally.add((route, method, code), seconds, inbound, outbound)
    tally.flush()
    assert _samples(actual_registry) == _samples(expected_registry)


def test_a_request_is_tallied_in_one_call() -> None:
    """``RegistryMetrics.request`` is the request tally's own ``add``, not a method of its
    own calling it (one Python call per request fewer), and counts as it did."""
    from registry.metrics import RegistryMetrics

    metrics = RegistryMetrics()
    assert getattr(metrics.request, "__func__", None) is RequestTally.add
    metrics.request(("manifest", "GET", "200"), 0.002, 0, 528)
    metrics.flush()
    samples = _samples(metrics.registry)
    assert 'registry_http_requests_total{code="200",handler="manifest",method="GET"} 1.0' in samples


def _responses() -> list[web.Response]:
    return [
        web.Response(body=b'{"schemaVersion": 2}'),
        web.Response(text="héllo"),
        web.json_response({"tags": ["a"]}),
        web.Response(),
        web.Response(status=202, headers={"Content-Length": "0"}),
        web.Response(body=b"abc", headers={"Content-Length": "3"}),
        web.Response(body=io.BytesIO(b"a payload")),
        web.Response(body=bytearray(b"mutable")),
    ]


@pytest.mark.parametrize("index", range(len(_responses())))
def test_a_response_s_bytes_sent_are_its_content_length(index: int) -> None:
    """The bytes a web.Response answered are what its ``content_length`` says (read off
    its body for a plain one, without the property): the tally counts the same."""
    response = _responses()[index]
    request = make_mocked_request("GET", "/v2/a/b/manifests/t")
    length = response.content_length
    expected = response.body_length if length is None else length
    assert _sent(request, response) == expected


def test_a_plain_response_s_bytes_are_counted_without_its_content_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The property (and the abstract class check for a payload it makes) is two Python
    calls per request: a bytes body's length is read directly."""
    response = web.Response(body=b'{"schemaVersion": 2}')

    def unread(self: web.Response) -> int:
        raise AssertionError("content_length read")

    monkeypatch.setattr(web.Response, "content_length", property(unread))
    assert _sent(make_mocked_request("GET", "/v2/a/b/manifests/t"), response) == 20
