"""Registries with the web interface on, seeded, in each auth mode; and raw HTTP helpers
for what a browser would not send (forged forms)."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.deployments import (
    HtpasswdDeployment,
    TokenDeployment,
    start_htpasswd_deployment,
    start_token_deployment,
)
from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.ui_seed import Seeded, seed_storage

# alice owns alice/*, bob may pull it, anyone may pull public/*, only admin sees secret/*.
REPOSITORIES = ["alice/app", "public/base", "secret/hidden"]
UI_SETTINGS = {"ui": {"enabled": True}, "storage": {"delete": {"enabled": True}}}
UI_ENV = {"REGISTRY_UI_ENABLED": "true", "REGISTRY_STORAGE_DELETE_ENABLED": "true"}


@dataclass
class TokenUi:
    deployment: TokenDeployment
    seeded: Seeded

    @property
    def url(self) -> str:
        return self.deployment.registry.url


@pytest.fixture(scope="module")
def token_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenUi]:
    directory = tmp_path_factory.mktemp("ui-token")
    seeded = seed_storage(directory / "data", REPOSITORIES)
    deployment = start_token_deployment(directory, UI_SETTINGS)
    try:
        yield TokenUi(deployment, seeded)
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def htpasswd_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HtpasswdDeployment]:
    directory = tmp_path_factory.mktemp("ui-htpasswd")
    seed_storage(directory / "data", REPOSITORIES)
    deployment = start_htpasswd_deployment(directory, UI_ENV)
    try:
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture(scope="module")
def open_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("ui-open")
    seed_storage(directory / "data", REPOSITORIES)
    registry = filesystem_registry(directory, **UI_ENV)
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str


def request(
    base: str,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to ``base`` (http://host:port), with a session cookie and a form."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    headers = dict(headers or {})
    body = None
    if cookie is not None:
        headers["Cookie"] = f"portside_ui={cookie}"
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


def session_of(answer: Answer) -> str:
    """The session cookie an answer sets."""
    for header in answer.headers.get_all("Set-Cookie") or []:
        found = re.match(r'portside_ui="?([^";]+)', header)
        if found:
            return found.group(1)
    raise AssertionError(f"no session cookie in {answer.headers}")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)
