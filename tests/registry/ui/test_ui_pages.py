"""Paging and filtering the repository list in token mode: a user without the catalog
right pages through exactly the names they may pull (the scan crosses the token
requests' 64-scope batches), a filter keeps to a name prefix, and a user with the
catalog right pages through every name."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from registry.ui.pages import MAX_SCANNED
from tests.registry.ui.conftest import UI_SETTINGS, csrf_of, request, session_of
from tests.support.deployments import PASSWORDS, TokenDeployment, start_token_deployment
from tests.support.ui_seed import seed_repositories

ALICE = [f"alice/r-{i:03d}" for i in range(70)]
PUBLIC = [f"public/p-{i:03d}" for i in range(10)]
# Sorted among and after the others: a page must look past them, and past more of them
# than one page may look at (pages.MAX_SCANNED).
SECRET = [f"alice-secret/s-{i:03d}" for i in range(40)] + [
    f"secret/s-{i:03d}" for i in range(MAX_SCANNED + 40)
]


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenDeployment]:
    directory = tmp_path_factory.mktemp("ui-many")
    seed_repositories(directory / "data", ALICE + PUBLIC + SECRET)
    deployment = start_token_deployment(directory, UI_SETTINGS)
    try:
        yield deployment
    finally:
        deployment.stop()


def log_in(url: str, user: str) -> str:
    first = request(url, "GET", "/ui/login")
    form = {"csrf": csrf_of(first.body), "username": user, "password": PASSWORDS[user]}
    answer = request(url, "POST", "/ui/login", cookie=session_of(first), form=form)
    assert answer.status == 303, answer.body
    return session_of(answer)


def every_page(url: str, cookie: str, path: str) -> list[list[str]]:
    """The names of each page, following "Next page" links."""
    pages = []
    while path:
        page = request(url, "GET", path, cookie=cookie)
        assert page.status == 200, page.body
        pages.append(re.findall(r'<li><a href="/ui/r/([^"]+)/-/tags">', page.body))
        found = re.search(r'rel="next" href="([^"]+)"', page.body)
        path = found.group(1).replace("&amp;", "&") if found else ""
        assert len(pages) < 30
    return pages


def test_a_user_pages_through_exactly_what_they_may_pull(many: TokenDeployment) -> None:
    url = many.registry.url
    bob = log_in(url, "bob")
    pages = every_page(url, bob, "/ui/?n=25")
    # The fourth page ends where its scan budget does, short, with a link that goes on
    # past the names bob may not pull to the end.
    assert [len(p) for p in pages] == [25, 25, 25, 5, 0]
    shown = [name for page in pages for name in page]
    assert shown == sorted(ALICE + PUBLIC)

    filtered = every_page(url, bob, "/ui/?q=public/&n=25")
    assert filtered == [PUBLIC]
    # Nothing bob may pull: two empty pages, the first ending at its scan budget.
    assert every_page(url, bob, "/ui/?q=secret/") == [[], []]


def test_a_user_with_the_catalog_right_pages_through_every_name(many: TokenDeployment) -> None:
    url = many.registry.url
    admin = log_in(url, "admin")
    pages = every_page(url, admin, "/ui/?n=100")
    everything = sorted(ALICE + PUBLIC + SECRET)
    assert [len(p) for p in pages] == [100] * (len(everything) // 100) + [len(everything) % 100]
    assert [name for page in pages for name in page] == everything
    assert every_page(url, admin, "/ui/?q=alice-secret/&n=25") == [SECRET[:25], SECRET[25:40]]
