"""The route table's matching of ``/v2/<name>/<resource>`` tails: names that contain the
words of other routes, and the order in which overlapping routes are tried."""

from __future__ import annotations

import pytest

from registry.routes import REPOSITORY_ROUTES
from registry.routing import literal_prefix, match_route
from shared.errors import RegistryError

DIGEST = "sha256:" + "a" * 64
CASES = [
    ("app/manifests/latest", "manifest", "app", {"reference": "latest"}),
    ("a/manifests/b/manifests/v1", "manifest", "a/manifests/b", {"reference": "v1"}),
    ("a/tags/list/manifests/v1", "manifest", "a/tags/list", {"reference": "v1"}),
    ("a/b/blobs/uploads", "upload_start", "a/b", {}),
    ("a/b/blobs/uploads/", "upload_start", "a/b", {}),
    ("a/blobs/uploads/blobs/uploads/", "upload_start", "a/blobs/uploads", {}),
    ("a/blobs/uploads/some-id", "upload", "a", {"upload_id": "some-id"}),
    (f"a/b/blobs/{DIGEST}", "blob", "a/b", {"digest": DIGEST}),
    (f"a/blobs/b/blobs/{DIGEST}", "blob", "a/blobs/b", {"digest": DIGEST}),
    ("bench/small/tags/list", "tags", "bench/small", {}),
    ("a/tags/list/tags/list", "tags", "a/tags/list", {}),
    (f"a/referrers/{DIGEST}", "referrers", "a", {"digest": DIGEST}),
]


@pytest.mark.parametrize(("tail", "resource", "name", "params"), CASES)
def test_a_tail_names_its_resource_repository_and_parameters(
    tail: str, resource: str, name: str, params: dict[str, str]
) -> None:
    method = "POST" if resource == "upload_start" else "GET"
    match = match_route(REPOSITORY_ROUTES, tail, method)
    assert (match.resource, match.name, dict(match.params)) == (resource, name, params)


@pytest.mark.parametrize("tail", ["app/tags/lists", "app/manifests/", "/tags/list", "app/blobs"])
def test_a_tail_of_no_route_is_404(tail: str) -> None:
    with pytest.raises(RegistryError) as raised:
        match_route(REPOSITORY_ROUTES, tail, "GET")
    assert raised.value.status in (400, 404)


def test_every_route_is_looked_for_by_text_its_matches_all_contain() -> None:
    for route in REPOSITORY_ROUTES:
        assert route.marker and route.suffix.startswith(route.marker)
    assert literal_prefix(r"/blobs/uploads/?") == "/blobs/uploads"
    assert literal_prefix(r"/blobs/(?P<digest>[^/]+)") == "/blobs/"
    assert literal_prefix("/tags/list") == "/tags/list"
