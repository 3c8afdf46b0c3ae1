"""The HTTP endpoints: token (GET, Docker token spec), OAuth2 token (POST), JWKS, health."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from shared.authorization import BasicCredentials, MalformedAuthorization, parse_authorization
from shared.client_address import client_address
from shared.errors import RegistryError
from shared.http_server import unreadable_body
from shared.scope import Scope, ScopeError, format_scopes, parse_scopes
from tokenauth import audit
from tokenauth.audit import AuditRecord
from tokenauth.authn.base import Identity
from tokenauth.errors import INVALID_REQUEST, TokenAuthError
from tokenauth.issuer import Issued, TokenIssuer
from tokenauth.keys import HEALTH, ISSUER, METRICS

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# A token response's headers, as web.json_response would set them.
_TOKEN_HEADERS = {**_NO_STORE, "Content-Type": "application/json; charset=utf-8"}
_encode = json.JSONEncoder().encode  # json.dumps' own default encoder, without its checks
MAX_FIELD_LENGTH = 8192  # any form or query value; a refresh token is well under


async def get_token(request: web.Request) -> web.Response:
    """``GET /auth?service=&scope=&account=&client_id=&offline_token=`` with optional Basic."""
    issuer = request.app[ISSUER]
    query = request.query
    ip = client_address(request)
    record = audit.begin("anonymous", ip, query.get("client_id"))
    try:
        service = issuer.check_service(query.get("service"))
        scopes = _scopes(query.getall("scope", []))
        record.requested = scopes
        identity = Identity.anonymous()
        credentials = _basic(request.headers.get("Authorization"), issuer, record)
        if credentials is not None:
            claimed = query.get("account")
            if claimed and claimed != credentials.user:
                record.account = claimed
                raise TokenAuthError(INVALID_REQUEST, "'account' differs from the login user")
            identity = await issuer.login(credentials.user, credentials.password, ip)
        granted = await issuer.authorize(identity, service, ip, scopes)
        issued = issuer.issue(identity, service, granted)
        more: dict[str, str] = {}
        if identity.account and query.get("offline_token") == "true":
            refresh = await issuer.refresh_token(identity, service)
            if refresh is not None:
                more["refresh_token"] = refresh
    except RegistryError as error:
        _decided(request, record, error.error.code.lower(), error.message)
        raise
    _decided(request, record, "granted")
    return _token_response(issued, more, docker=True)


async def post_token(request: web.Request) -> web.Response:
    """OAuth2 ``POST /auth``: ``grant_type=password`` or ``refresh_token`` (oauth.md)."""
    issuer = request.app[ISSUER]
    ip = client_address(request)
    record = audit.begin("none", ip)
    try:
        fields = await _form(request)
        grant = fields.get("grant_type", "")
        record.grant = grant[:32] or "none"
        record.client_id = fields.get("client_id")
        if grant not in ("password", "refresh_token"):
            message = "grant_type must be password or refresh_token"
            raise TokenAuthError(INVALID_REQUEST, message, oauth="unsupported_grant_type")
        if not record.client_id:
            raise TokenAuthError(INVALID_REQUEST, "client_id is required", oauth="invalid_request")
        service = issuer.check_service(fields.get("service"))
        scopes = _scopes([fields.get("scope", "")], oauth=True)
        record.requested = scopes
        if grant == "password":
            user, password = fields.get("username", ""), fields.get("password")
            if not user or password is None:
                raise TokenAuthError(
                    INVALID_REQUEST, "username and password are required", oauth="invalid_request"
                )
            identity = await issuer.login(user, password, ip)
            refresh = None
            if fields.get("access_type") == "offline":
                refresh = await issuer.refresh_token(identity, service)
        else:
            refresh = fields.get("refresh_token")
            if not refresh:
                raise TokenAuthError(
                    INVALID_REQUEST, "refresh_token is required", oauth="invalid_request"
                )
            identity = await issuer.redeem(refresh, service, ip)
        granted = await issuer.authorize(identity, service, ip, scopes)
        issued = issuer.issue(identity, service, granted)
        more = {"scope": format_scopes(granted)}
        if refresh:
            more["refresh_token"] = refresh  # reusable until it expires: hand back the same
    except RegistryError as error:
        _decided(request, record, error.error.code.lower(), error.message)
        raise
    _decided(request, record, "granted")
    return _token_response(issued, more, docker=False)


async def get_jwks(request: web.Request) -> web.Response:
    """The published signing keys (current, next, previous) as a JWK Set, with ``x5c``."""
    jwks = request.app[ISSUER].signer.jwks()
    return web.json_response(jwks, headers={"Cache-Control": "public, max-age=300"})


async def get_health(request: web.Request) -> web.Response:
    """Users files, ACL and signing key state (``tokenauth.health``); 503 when unusable."""
    status, body = request.app[HEALTH].report()
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _decided(request: web.Request, record: AuditRecord, outcome: str, reason: str = "") -> None:
    """The request's audit line, and its count in the metrics when they are on."""
    record.write(outcome, reason)
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.token_decided(record.grant, outcome)


def _token_response(issued: Issued, more: Mapping[str, str], *, docker: bool) -> web.Response:
    """The token response: ``{"access_token", "expires_in", "issued_at"}``, then ``token``
    (the Docker token spec's name, ``docker``) and the ``more`` fields, encoded into bytes
    once, with prepared headers (``web.json_response`` makes text and then encodes it,
    looking up the charset for every response)."""
    return web.Response(body=token_json(issued, more, docker=docker), headers=_TOKEN_HEADERS)


def token_json(issued: Issued, more: Mapping[str, str], *, docker: bool) -> bytes:
    """The token response's JSON, as ``json.dumps`` writes it.

    The access token goes in as it is, once or twice, rather than through the encoder: it
    is a JWS this process just signed, base64url text and dots, which JSON holds without
    escaping, and the encoder's scan of its ~1.4 KB twice per response was 9 of a repeat
    login's ~350 µs (docs/performance.md#token-issuance-with-workers). Every other value,
    a refresh token a client sent back included, goes through the encoder.
    """
    token = f'"{issued.token}"'
    lifetime = int(issued.lifetime.total_seconds())
    parts = [
        f'{{"access_token": {token}, "expires_in": {lifetime}, '
        f'"issued_at": {_encode(issued.issued_at)}'
    ]
    if docker:
        parts.append(f', "token": {token}')
    parts.extend(f", {_encode(key)}: {_encode(value)}" for key, value in more.items())
    parts.append("}")
    return "".join(parts).encode()


def _scopes(values: Sequence[str], *, oauth: bool = False) -> list[Scope]:
    try:
        if sum(map(len, values)) <= _REMEMBERED_SCOPES_LENGTH:
            return list(_parse_scopes(tuple(values)))
        return parse_scopes(values)
    except ScopeError as error:
        raise TokenAuthError(
            INVALID_REQUEST, f"malformed scope: {error}", oauth="invalid_scope" if oauth else None
        ) from None


# Clients ask for the same few scopes again and again (a CI job's push, each layer's
# token): short requests are parsed once. Bounded in entries and in each key's length,
# since the text is the client's; a malformed one raises and is not remembered.
_REMEMBERED_SCOPES_LENGTH = 512


@functools.lru_cache(maxsize=4096)
def _parse_scopes(values: tuple[str, ...]) -> tuple[Scope, ...]:
    return tuple(parse_scopes(values))


def _basic(header: str | None, issuer: TokenIssuer, record: AuditRecord) -> BasicCredentials | None:
    """The Basic credentials of a login; None for an anonymous request.

    ``Basic Og==`` (empty user and password) is anonymous too: clients without credentials
    send it, and other token servers (Distribution's, docker_auth) read it so.
    """
    try:
        credentials = parse_authorization(header)
    except MalformedAuthorization as error:
        record.grant = "basic"
        raise issuer.unauthorized(str(error)) from None
    if credentials is None or (isinstance(credentials, BasicCredentials) and credentials.empty):
        return None
    record.grant = "basic"
    if not isinstance(credentials, BasicCredentials):
        raise issuer.unauthorized("credentials must be Basic")
    return credentials


async def _form(request: web.Request) -> dict[str, str]:
    """The OAuth2 form's text fields (over-long values left out); 400 if it is unreadable.

    aiohttp's parser raises ValueError (and UnicodeDecodeError, LookupError for an unknown
    charset) on malformed multipart or urlencoded bodies; each is the client's mistake. So
    is a body that cannot be read (RequestPayloadError: a bad Content-Encoding, malformed
    chunks, a short body; 408 when it stopped arriving), which the audit line records.
    """
    try:
        form = await request.post()
    except (ValueError, LookupError):
        message = "malformed form body"
        raise TokenAuthError(INVALID_REQUEST, message, oauth="invalid_request") from None
    except RequestPayloadError as error:
        status, message = unreadable_body(error)
        raise TokenAuthError(
            INVALID_REQUEST, message, oauth="invalid_request", status=status
        ) from None
    return {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= MAX_FIELD_LENGTH}
