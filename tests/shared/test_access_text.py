"""The text format's access line, written straight from the captured values
(``shared.access_text._text_line``): byte for byte what the formatter's generic
``info_line`` writes for the same fields, whatever the values, static ``log.fields`` and
the service's own fields."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from shared.access_text import (
    MAX_FIELD,
    MESSAGE,
    Captured,
    _text_line,
    access_fields,
    access_line,
)
from shared.log_format import TextFormatter

NAME = "registry.access"
CREATED = 1_795_000_000.123456

VALUES: list[Captured] = [
    (
        "5f0c3b8e-0d7b-4c52-9c1e-2a3b4c5d6e7f",
        "GET",
        "/v2/a/b/manifests/latest",
        "/v2/{name}/manifests/{reference}",
        "127.0.0.1",
        "registry.example:5000",
        "docker/27.0 go/go1.22",
        200,
        528,
        0.000789,
        {"vars.name": "a/b", "vars.reference": "latest"},
    ),
    (
        None,  # refused by the parser: no id, no route, no service fields
        "GET",
        "/bad path",
        "",
        "::1",
        "",
        "",
        400,
        0,
        1.5,
        None,
    ),
    (
        'id="quoted" x=1',
        "PATCH",
        "/v2/" + "n/" * MAX_FIELD,
        "/v2/{name}/blobs/uploads/{uuid}",
        "10.0.0.1",
        "h\nforged=1",
        "ü" * (MAX_FIELD + 5),
        202,
        0,
        0.0123,
        {"vars.name": "a b", "vars.uuid": None, "count": 3, "ratio": 0.5, "flag": True},
    ),
]
STATIC: list[dict[str, Any]] = [
    {},
    {"service": "registry", "environment": "prod line"},
    {"http.request.host": "overridden"},  # a static field a line's own field overrides
    {"vars.name": "static"},  # one a service field overrides
]
EXTRA_OVERRIDING = {"http.response.status": "forced", "vars.name": "x"}


@pytest.mark.parametrize(("captured", "static"), list(itertools.product(VALUES, STATIC)))
def test_the_text_line_is_the_generic_one(captured: Captured, static: dict[str, Any]) -> None:
    formatter = TextFormatter(static)
    line = access_line(formatter, NAME, CREATED, captured)
    assert line == formatter.info_line(NAME, CREATED, MESSAGE, access_fields(*captured))
    assert "\n" not in line


def test_a_service_field_named_as_a_standard_one_wins_as_before() -> None:
    captured: Captured = (*VALUES[0][:-1], EXTRA_OVERRIDING)
    formatter = TextFormatter({})
    line = access_line(formatter, NAME, CREATED, captured)
    assert line == formatter.info_line(NAME, CREATED, MESSAGE, access_fields(*captured))
    assert "http.response.status=forced" in line
    assert "http.response.status=200" not in line


def test_the_straight_path_is_taken_unless_fields_override_others() -> None:
    """Straight from the values unless a static field is overridden, or a service field
    takes the request id's or the duration's place; the registry's own fields (the route's
    name, the bytes a sendfile sent) take the straight path, as busy as it is."""
    plain, overriding = TextFormatter({"service": "registry"}), TextFormatter(STATIC[2])
    assert _text_line(plain, NAME, CREATED, VALUES[0]) is not None
    assert _text_line(overriding, NAME, CREATED, VALUES[0]) is None
    assert _text_line(plain, NAME, CREATED, (*VALUES[0][:-1], EXTRA_OVERRIDING)) is not None
    registry_fields = {"http.request.route": "manifest", "vars.name": "a/b"}
    assert _text_line(plain, NAME, CREATED, (*VALUES[0][:-1], registry_fields)) is not None
    for unique in ("http.request.id", "http.response.duration"):
        captured: Captured = (*VALUES[0][:-1], {unique: "given"})
        assert _text_line(plain, NAME, CREATED, captured) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"http.request.route": "manifest", "vars.name": "a/b", "vars.reference": "latest"},
        {"http.response.written": 1_048_576, "http.request.route": "blob"},
        {"http.request.host": None, "http.request.method": 'odd "value"', "n": 2},
        {"http.request.id": "given", "http.response.duration": 0.5},
    ],
)
def test_service_fields_named_as_standard_ones_are_written_as_merged(
    extra: dict[str, Any],
) -> None:
    """A service field named as a standard one is written in that one's place with its own
    value (None leaves it out), as the formatter's merge of the fields writes it."""
    for static in STATIC[:2]:
        formatter = TextFormatter(static)
        for captured in VALUES:
            with_extra: Captured = (*captured[:-1], {**(captured[-1] or {}), **extra})
            for _ in range(2):  # made, then remembered
                line = access_line(formatter, NAME, CREATED, with_extra)
                assert line == formatter.info_line(
                    NAME, CREATED, MESSAGE, access_fields(*with_extra)
                )


def test_lines_whose_fields_repeat_are_the_generic_ones_too() -> None:
    """The repeated fields' text is remembered by the values it was made of: a line made
    again from the same values, or from values equal to them but of another type (``1``,
    ``1.0``, ``True``; ``0.0`` and ``-0.0``; ``(True,)`` and ``(1,)``), is still the
    formatter's own."""
    formatter = TextFormatter({"service": "registry"})
    rid, *repeated, _, extra = VALUES[0]
    values = [1, 1.0, True, 1, "1", [1], None, True, 0.0, -0.0, (1,), (True,)]
    for number, value in enumerate(values):
        fields = {**(extra or {}), "count": value}
        captured: Captured = (f"{rid}-{number}", *repeated, number / 7, fields)  # type: ignore[assignment]
        for _ in range(2):
            line = access_line(formatter, NAME, CREATED + number, captured)
            assert line == formatter.info_line(
                NAME, CREATED + number, MESSAGE, access_fields(*captured)
            )
