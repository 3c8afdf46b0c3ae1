"""Upload URLs carry their state signed with http.secret: any instance sharing the secret
and the storage continues an upload; another secret, or a forged state, is refused."""

from __future__ import annotations

import hashlib
import io
import logging
import os

import pytest
from yarl import URL

from tests.registry.conftest import ClientFactory, RegistryClient

NAME = "team/app"


def relative(location: str) -> str:
    url = URL(location)
    return url.raw_path_qs if url.absolute else location


async def start(client: RegistryClient, name: str = NAME) -> str:
    response = await client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status == 202, await response.text()
    location = relative(response.headers["Location"])
    assert "_state=" in location
    assert response.headers["Docker-Upload-UUID"] in location
    return location


async def patch(client: RegistryClient, location: str, chunk: bytes, at: int) -> str:
    response = await client.patch(
        location,
        data=io.BytesIO(chunk),  # aiohttp warns about (here: fails on) large raw bytes
        headers={
            "Content-Range": f"{at}-{at + len(chunk) - 1}",
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status == 202, await response.text()
    return relative(response.headers["Location"])


async def error_code(
    client: RegistryClient, method: str, location: str, **kwargs: object
) -> tuple[int, str]:
    response = await client.request(method, location, **kwargs)  # type: ignore[arg-type]
    body = await response.json()
    return response.status, body["errors"][0]["code"]


async def test_any_instance_sharing_the_secret_continues_an_upload(
    make_registry: ClientFactory,
) -> None:
    instances = [await make_registry() for _ in range(3)]
    data = os.urandom(7 * 1024 * 1024 + 11)
    chunks = [data[i : i + 2 * 1024 * 1024] for i in range(0, len(data), 2 * 1024 * 1024)]
    location = await start(instances[0])
    at = 0
    for index, chunk in enumerate(chunks):
        location = await patch(instances[(index + 1) % 3], location, chunk, at)
        at += len(chunk)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    done = await instances[2].put(location, params={"digest": digest})
    assert done.status == 201, await done.text()
    for instance in instances:
        response = await instance.get(f"/v2/{NAME}/blobs/{digest}")
        assert await response.read() == data


async def test_another_secret_is_a_clear_upload_invalid(make_registry: ClientFactory) -> None:
    ours = await make_registry()
    theirs = await make_registry({"REGISTRY_HTTP_SECRET": "a-different-secret"})
    location = await start(ours)
    status, code = await error_code(theirs, "PATCH", location, data=b"chunk")
    assert (status, code) == (400, "BLOB_UPLOAD_INVALID")
    status_reply = await ours.get(location)
    assert status_reply.status == 204 and status_reply.headers["Range"] == "0-0"


async def test_forged_or_foreign_states_are_refused(make_registry: ClientFactory) -> None:
    client = await make_registry()
    location = await start(client)
    path, _, state = location.partition("?_state=")
    payload, _, mac = state.partition(".")
    tampered = f"{path}?_state={payload}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    assert await error_code(client, "GET", tampered) == (400, "BLOB_UPLOAD_INVALID")
    assert await error_code(client, "GET", f"{path}?_state=garbage") == (400, "BLOB_UPLOAD_INVALID")
    assert await error_code(client, "GET", path) == (404, "BLOB_UPLOAD_UNKNOWN")
    other = await start(client)
    swapped = f"{path}?_state={other.partition('?_state=')[2]}"
    assert await error_code(client, "PATCH", swapped, data=b"x") == (404, "BLOB_UPLOAD_UNKNOWN")
    elsewhere = location.replace(f"/v2/{NAME}/", "/v2/team/other/")
    assert await error_code(client, "DELETE", elsewhere) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert (await client.get(location)).status == 204  # the real state still works


async def test_without_a_secret_one_is_generated_with_a_warning(
    make_registry: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "registry"):
        first = await make_registry({"REGISTRY_HTTP_SECRET": ""})
    assert "http.secret is not set" in caplog.text
    assert "need the same http.secret" in caplog.text
    # A restarted (or second) unconfigured instance cannot verify the first one's states;
    # it takes a well-formed state at its word and storage decides.
    restarted = await make_registry({"REGISTRY_HTTP_SECRET": ""})
    location = await start(first)
    location = await patch(restarted, location, b"abc", 0)
    digest = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert (await first.put(location, params={"digest": digest})).status == 201
