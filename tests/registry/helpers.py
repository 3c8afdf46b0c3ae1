"""Black-box helpers for the registry API tests: requests and replies, error envelopes,
the OCI conformance suite's fixtures, and a runner that plays its checks in order.

The conformance suite (opencontainers/distribution-spec ``conformance/``) is a sequence of
dependent checks; ``run_checks`` replays them the way Ginkgo does: every earlier check runs
in order and a failed expectation ends only that check, so each test can target one check
with the registry in exactly the state the suite would leave it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import random
import string
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tests.support.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, make_layer

RegistryClient = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[RegistryClient]]
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
OCTET = {"Content-Type": "application/octet-stream"}
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
# The codes the conformance suite accepts in an error body (setup.go's errorCodes).
SPEC_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "MANIFEST_UNVERIFIED",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "TAG_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
    }
)


# ---------------------------------------------------------------- requests and replies


@dataclass(frozen=True)
class Reply:
    """A whole HTTP response, read and released."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        """Path and query of ``Location`` (absolute or relative), as reggie follows it."""
        return relative(self.headers.get("Location", ""))

    def __str__(self) -> str:
        return f"{self.status} {dict(self.headers)} {self.body[:300]!r}"


def relative(location: str) -> str:
    if not location:
        return ""
    url = URL(location)
    return url.raw_path_qs if url.absolute else location


async def send(
    client: RegistryClient,
    method: str,
    target: str | URL,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    params: Mapping[str, str] | None = None,
) -> Reply:
    """One request to the registry; ``params`` are merged into the target's own query."""
    url = URL(target, encoded=True) if isinstance(target, str) else target
    if params:
        url = url.update_query(params)
    # aiohttp warns (an error here) about big raw bytes bodies; a BytesIO streams the same.
    data = io.BytesIO(body) if body is not None and len(body) > 1 << 20 else body
    async with client.request(method, url, headers=headers, data=data) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


async def send_raw(client: RegistryClient, request: bytes, *, eof: bool = False) -> list[Reply]:
    """Bytes on a fresh socket, exactly as given (no URL normalisation, any framing);
    the replies the server sends before it closes the connection. ``eof`` half-closes
    the socket after the bytes, as a client that dies mid-body would."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    if eof:
        writer.write_eof()
    data = await asyncio.wait_for(reader.read(-1), timeout=10)
    writer.close()
    await writer.wait_closed()
    return _parse_replies(data)


def raw_request(
    method: str, target: str, headers: Mapping[str, str], body: bytes = b"", close: bool = True
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    lines += ["Connection: close"] if close else []
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _parse_replies(data: bytes) -> list[Reply]:
    replies = []
    while data.startswith(b"HTTP/"):
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            key, _, value = line.partition(":")
            headers.add(key.strip(), value.strip())
        length = int(headers.get("Content-Length", "0"))
        replies.append(Reply(int(status_line.split()[1]), CIMultiDictProxy(headers), rest[:length]))
        data = rest[length:]
    return replies


# ---------------------------------------------------------------- assertions


def error_codes(reply: Reply) -> list[str]:
    """The codes of a spec error body; fails unless the body is the spec's envelope."""
    try:
        envelope = reply.json()
    except ValueError:
        raise AssertionError(f"not a JSON error body: {reply}") from None
    assert isinstance(envelope, dict), reply
    errors = envelope.get("errors")
    assert isinstance(errors, list) and errors, reply
    for error in errors:
        assert isinstance(error, dict), reply
        assert {"code", "message", "detail"} <= error.keys(), reply
        assert isinstance(error["code"], str) and isinstance(error["message"], str), reply
    return [e["code"] for e in errors]


def assert_error(reply: Reply, status: int | Sequence[int], *codes: str) -> None:
    """``reply`` is an error with an allowed status, the spec envelope and one of ``codes``
    first; every /v2/ error carries the API version header."""
    allowed = (status,) if isinstance(status, int) else tuple(status)
    assert reply.status in allowed, reply
    assert reply.headers.get(API_VERSION[0]) == API_VERSION[1], reply
    found = error_codes(reply)
    if codes:
        assert found[0] in codes, reply


def assert_2xx(reply: Reply) -> None:
    assert 200 <= reply.status < 300, reply


# ---------------------------------------------------------------- content


@dataclass(frozen=True)
class Blob:
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def length(self) -> str:
        return str(len(self.data))


def go_json(value: Any) -> bytes:
    """JSON the way Go's ``json.MarshalIndent(v, "", "\\t")`` writes it."""
    return json.dumps(value, indent="\t").encode()


def descriptor(
    media_type: str,
    blob: Blob,
    *,
    data: bool = False,
    unspecified: bytes | None = None,
    artifact_type: str | None = None,
) -> dict[str, Any]:
    """A descriptor as the suite marshals it: ``data`` optional, ``newUnspecifiedField``
    always present (base64, or null when unset)."""
    out: dict[str, Any] = {"mediaType": media_type, "digest": blob.digest, "size": len(blob.data)}
    if data:
        out["data"] = base64.b64encode(blob.data).decode()
    if artifact_type:
        out["artifactType"] = artifact_type
    out["newUnspecifiedField"] = base64.b64encode(unspecified).decode() if unspecified else None
    return out


async def push_blob(client: RegistryClient, name: str, blob: Blob) -> Reply:
    """The suite's blob push: ``POST`` an upload, ``PUT`` the whole blob to its Location."""
    started = await send(client, "POST", f"/v2/{name}/blobs/uploads/")
    assert started.location, started
    return await send(
        client,
        "PUT",
        started.location,
        headers=OCTET,
        body=blob.data,
        params={"digest": blob.digest},
    )


async def put_manifest(
    client: RegistryClient, name: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST
) -> Reply:
    return await send(
        client,
        "PUT",
        f"/v2/{name}/manifests/{reference}",
        headers={"Content-Type": media_type},
        body=body,
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- the suite's fixtures

WORKFLOWS = 16  # setup.go's loop bound is numWorkflows = 1 << 4
REF_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
REF_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
REF_TYPE_INDEX = "application/vnd.food.stand"
ANNOTATION = "org.opencontainers.conformance.test"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@dataclass
class SuiteData:
    """setup.go's fixtures, rebuilt: configs, manifests, blobs A/B, referrer artifacts."""

    configs: list[Blob]
    layer: Blob
    manifests: list[Blob]
    empty_layer_manifest: Blob
    blob_a: Blob
    blob_b: Blob
    chunk1: bytes
    chunk2: bytes
    dummy_digest: str = "sha256:" + hashlib.sha256(b"hello world").hexdigest()
    empty_json: Blob = Blob(b"{}")
    ref_blob_a: Blob = Blob(b"NHL Peanut Butter on my NHL bagel")
    ref_blob_b: Blob = Blob(b"NBA Strawberry Jam on my NBA croissant")
    refs: dict[str, Blob] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def range1(self) -> str:
        return f"0-{len(self.chunk1) - 1}"

    @property
    def range2(self) -> str:
        return f"{len(self.chunk1)}-{len(self.chunk1) + len(self.chunk2) - 1}"

    def rechunk(self, size: int, rng: random.Random) -> None:
        """setupChunkedBlob: a new blob B of ``size`` bytes split after size/2 + 1."""
        self.blob_b = Blob(rng.randbytes(size))
        self.chunk1 = self.blob_b.data[: size // 2 + 1]
        self.chunk2 = self.blob_b.data[size // 2 + 1 :]


def suite_data(seed: int = 1) -> SuiteData:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-"
    configs = [
        Blob(
            go_json(
                {
                    "author": "".join(rng.choice(alphabet) for _ in range(16)),
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []},
                }
            )
        )
        for _ in range(WORKFLOWS)
    ]
    layer = Blob(make_layer({"test.txt": b"you bothered to find out what was in here.\n"}))
    layer_desc = descriptor(OCI_LAYER_GZIP, layer)

    def image(config: Blob, media_type: bool = True, layers: bool = True) -> Blob:
        doc: dict[str, Any] = {"schemaVersion": 2}
        if media_type:
            doc["mediaType"] = OCI_MANIFEST
        doc["config"] = descriptor(OCI_CONFIG, config, data=True, unspecified=b"hello world")
        doc["layers"] = [layer_desc] if layers else []
        return Blob(go_json(doc))

    data = SuiteData(
        configs=configs,
        layer=layer,
        manifests=[image(c) for c in configs],
        empty_layer_manifest=image(configs[1], media_type=False, layers=False),
        blob_a=Blob(rng.randbytes(42)),
        blob_b=Blob(b""),
        chunk1=b"",
        chunk2=b"",
    )
    data.rechunk(42, rng)
    _add_referrers(data)
    return data


def _add_referrers(d: SuiteData) -> None:
    empty = descriptor(EMPTY_JSON, d.empty_json)

    def subject_of(i: int) -> dict[str, Any]:
        return descriptor(OCI_MANIFEST, d.manifests[i])

    def artifact(
        key: str,
        config: dict[str, Any],
        layer: dict[str, Any],
        note: str | None,
        artifact_type: str | None = None,
        subject: int = 4,
    ) -> None:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type:
            doc["artifactType"] = artifact_type
        doc |= {"config": config, "layers": [layer], "subject": subject_of(subject)}
        if note:
            doc["annotations"] = {ANNOTATION: note}
        d.refs[key] = Blob(go_json(doc))
        if note:
            d.annotations[d.refs[key].digest] = note

    artifact("a_config", descriptor(REF_TYPE_A, d.ref_blob_a), empty, "test config a")
    artifact("b_config", descriptor(REF_TYPE_B, d.ref_blob_b), empty, "test config b")
    a_layer = descriptor(REF_TYPE_A, d.ref_blob_a)
    b_layer = descriptor(REF_TYPE_B, d.ref_blob_b)
    artifact("a_layer", empty, a_layer, "test layer a", REF_TYPE_A)
    artifact("b_layer", empty, b_layer, "test layer b", REF_TYPE_B)
    # C is B's twin whose subject (manifests[3]) the discovery workflow never pushes.
    artifact("c_layer", empty, b_layer, None, REF_TYPE_B, subject=3)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": REF_TYPE_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, d.refs[k]) for k in ("a_config", "a_layer")],
        "subject": subject_of(4),
        "annotations": {ANNOTATION: "test index"},
    }
    d.refs["index"] = Blob(go_json(index))
    d.annotations[d.refs["index"].digest] = "test index"


# ---------------------------------------------------------------- running checks in order


class Skipped(Exception):
    """The suite would skip this check here (``RunOnlyIf`` false, or an env-gated check)."""


@dataclass
class Suite:
    """What every check sees: the registry, the fixtures, the namespaces."""

    client: RegistryClient
    data: SuiteData = field(default_factory=suite_data)
    name: str = "oci/conformance"
    crossmount: str = field(default_factory=lambda: f"conformance-{uuid.uuid4()}")
    rng: random.Random = field(default_factory=lambda: random.Random(2))


S = TypeVar("S")


@dataclass(frozen=True)
class Check(Generic[S]):
    """One ``g.Specify`` of the suite: an id from CONFORMANCE.md, its title, its body."""

    id: str
    title: str
    run: Callable[[Suite, S], Awaitable[None]]


Body = Callable[[Suite, S], Awaitable[None]]


def numbered(prefix: str, steps: Sequence[tuple[str, Body[S]]]) -> list[Check[S]]:
    """Checks ``<prefix>1``... in the suite's order, as CONFORMANCE.md numbers them."""
    return [Check(f"{prefix}{i}", title, run) for i, (title, run) in enumerate(steps, start=1)]


async def run_checks(suite: Suite, state: S, checks: Sequence[Check[S]]) -> list[str]:
    """Play ``checks`` in order as Ginkgo does; return ``"ID title: reason"`` per failure."""
    failures = []
    for check in checks:
        try:
            await check.run(suite, state)
        except Skipped:
            continue
        except Exception as exc:  # a failed Expect (or a Go panic) ends only this check
            failures.append(f"{check.id} {check.title}: {type(exc).__name__} {exc}")
    return failures


async def run_one(suite: Suite, state: S, checks: Sequence[Check[S]], target: str) -> None:
    """Everything before ``target`` as prerequisites (their failures tolerated, like the
    suite), then ``target`` itself with its failure, or skip, reported."""
    position = next(i for i, c in enumerate(checks) if c.id == target)
    await run_checks(suite, state, checks[:position])
    check = checks[position]
    try:
        await check.run(suite, state)
    except Skipped as skip:
        pytest.skip(f"the conformance suite skips {target} here: {skip}")
    except AssertionError as exc:
        raise AssertionError(f"{check.id} {check.title!r}: {exc}") from exc
