"""Hostile requests against the real ``registry serve`` and ``tokenauth serve`` processes:
an oversized header is refused without being logged or echoed, and fuzzed Authorization
headers, token headers and claims never get a 500 or a traceback in either log."""

from __future__ import annotations

import base64
import gzip
import http.client
import itertools
import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from jwt.algorithms import ECAlgorithm

from shared.jose_keys import libtrust_key_id
from shared.token import TokenSigner
from tests.support.deployments import ISSUER, SERVICE, TokenDeployment, start_token_deployment
from tests.support.portside_servers import ServerProcess

REFRESH_AUDIENCE = "tokenauth-refresh:" + ISSUER
SECRET = "hunter2-do-not-echo"


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """hypothesis caches to ./.hypothesis even without a database: keep it in tmp."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis-home"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenDeployment]:
    running = start_token_deployment(tmp_path_factory.mktemp("hostile"))
    yield running
    running.stop()


def raw_exchange(server: ServerProcess, request: bytes) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def assert_clean_log(server: ServerProcess) -> None:
    log = server.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]


@pytest.mark.parametrize("service", ["registry", "tokenauth"])
def test_oversized_header_is_neither_logged_nor_echoed(
    deployment: TokenDeployment, service: str
) -> None:
    server: ServerProcess = getattr(deployment, service)
    credential = base64.b64encode(f"alice:{SECRET}".encode() * 2000)  # over any field limit
    answer = raw_exchange(
        server, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + credential + b"\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer
    assert b"application/json" in head
    (error,) = json.loads(body)["errors"]
    assert error["message"] == "a request line or header field over the size limit"
    assert credential[:16] not in answer
    log = server.wait_for_log("refused a request from 127.0.0.1")
    assert credential[:16].decode() not in log and SECRET not in log
    assert_clean_log(server)


# ---------------------------------------------------------------- fuzzing

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
_big_int = st.integers(min_value=-(10**30), max_value=10**30)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(signer: TokenSigner, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A compact JWS of any header and claims (PyJWT's encoder refuses odd headers)."""
    signing_input = (
        _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    )
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), signer.key)  # type: ignore[arg-type]
    return signing_input + "." + _b64url(signature)


@st.composite
def tokens(draw: st.DrawFn, signer: TokenSigner) -> str:
    """Signed tokens whose header and claims vary in type, size and content; or junk."""
    kids = [signer.kid, libtrust_key_id(signer.public_key)]
    x5c = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode() for cert in signer.chain]
    header = draw(
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["ES256", "none", "HS256", "RS256"]) | _json},
            optional={
                "kid": st.sampled_from(kids) | _json,
                "x5c": st.just(x5c) | st.lists(st.text(max_size=40), max_size=6) | _json,
                "typ": st.sampled_from(["JWT", "refresh+jwt"]) | _json,
            },
        )
    )
    claims = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "iss": st.just(ISSUER) | _json,
                "aud": st.sampled_from([SERVICE, REFRESH_AUDIENCE, [SERVICE]]) | _json,
                "sub": st.just("alice") | _json,
                "exp": _big_int | _json,
                "nbf": _big_int | _json,
                "iat": _big_int | _json,
                "jti": _json,
                "access": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={"type": _json, "name": _json, "actions": _json, "class": _json},
                    )
                    | _json,
                    max_size=3,
                )
                | _json,
                "service": st.just(SERVICE) | _json,
                "credential": _json,
            },
        )
    )
    signed = sign(signer, header, claims)
    junk = st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
    return draw(st.just(signed) | junk | st.just(signed + "x" * draw(st.integers(0, 70_000))))


def _no_newline(value: bytes) -> bytes:
    """A header value cannot hold CR or LF (http.client refuses to send them)."""
    return value.replace(b"\r", b"").replace(b"\n", b"")


def authorization_headers(token: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Authorization values: known schemes with fuzzed credentials, any bytes, any size."""
    no_newline = st.binary(max_size=80).map(_no_newline)
    basic = st.binary(max_size=40).map(lambda b: b"Basic " + base64.b64encode(b))
    scheme = st.sampled_from([b"Basic ", b"Bearer ", b"bearer  ", b"Negotiate ", b""])
    return st.one_of(
        token.map(lambda t: b"Bearer " + _no_newline(t.encode("utf-8", "surrogatepass"))),
        basic,
        st.just(b"Basic Og=="),
        st.tuples(scheme, no_newline).map(b"".join),
        st.integers(0, 20_000).map(lambda n: b"Bearer " + b"A" * n),
    )


# Content-Encoding of the POST form: absent, or a name with junk bytes, or (no bytes) with
# the form itself: gzip-compressed under "gzip", as it is under any other name.
content_encodings: st.SearchStrategy[tuple[str, bytes] | None] = st.none() | st.tuples(
    st.sampled_from(["gzip", "deflate", "br", "zstd", "identity", "x-unknown", "gzip, gzip"]),
    st.binary(max_size=200),
)

_source_addresses = (f"127.9.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def request_status(server: ServerProcess, method: str, path: str, **parts: Any) -> int:
    """One request from a fresh loopback source address (rate limits are per address)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=30, source_address=(next(_source_addresses), 0)
    )
    try:
        connection.putrequest(method, path)
        for name, value in parts.get("headers", {}).items():
            connection.putheader(name, value)
        body: bytes = parts.get("body", b"")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_fuzzed_credentials_never_cause_a_server_error(deployment: TokenDeployment) -> None:
    signer = deployment.signer()

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        authorization=authorization_headers(tokens(signer)),
        refresh=tokens(signer),
        encoding=content_encodings,
    )
    def exchange(authorization: bytes, refresh: str, encoding: tuple[str, bytes] | None) -> None:
        headers = {"Authorization": authorization}
        status = request_status(deployment.registry, "GET", "/v2/", headers=headers)
        assert status in (200, 400, 401), (status, authorization[:200])
        status = request_status(
            deployment.tokenauth, "GET", f"/auth?service={SERVICE}", headers=headers
        )
        assert status in (200, 400, 401), (status, authorization[:200])
        form = urlencode(
            {
                "grant_type": "refresh_token",
                "client_id": "fuzz",
                "service": SERVICE,
                "refresh_token": refresh.encode("utf-8", "surrogatepass"),
            }
        ).encode()
        form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if encoding is not None:
            name, junk = encoding
            form_headers["Content-Encoding"] = name
            form = junk or (gzip.compress(form) if name == "gzip" else form)
        status = request_status(
            deployment.tokenauth, "POST", "/auth", headers=form_headers, body=form
        )
        assert status in (400, 401, 413), (status, refresh[:200], encoding)

    exchange()
    assert_clean_log(deployment.registry)
    assert_clean_log(deployment.tokenauth)
