"""The registry's memory of verified bearer tokens (``registry.auth.token_cache``): a
remembered token costs no verification, yet stops working at its expiry, never vouches
for other bytes, and the memory stays bounded whatever tokens clients send."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from registry.app import create_app
from registry.auth.base import Grant
from registry.auth.token import TokenAccessController
from registry.auth.token_cache import VerifiedToken, VerifiedTokens, token_key
from registry.config import load_config
from shared.scope import Scope
from shared.token import Claims, TokenSigner
from tests.registry.auth.conftest import ISSUER, SERVICE, token, token_environ
from tests.registry.conftest import RegistryClient
from tests.shared.test_token import make_cert
from tokenauth.keygen import certificate_pem, generate_key, self_signed_certificate

CAPACITY = 4
TAGS = "/v2/alice/app/tags/list"  # 404 NAME_UNKNOWN once past auth: nothing is pushed
PULL = "repository:alice/app:pull"

CachedRegistry = tuple[RegistryClient, TokenAccessController]
ClientMaker = Callable[[web.Application], Awaitable[RegistryClient]]


async def start_cached_registry(
    aiohttp_client: ClientMaker, environ: dict[str, str], tmp_path: Path, root: x509.Certificate
) -> CachedRegistry:
    """A token-mode registry trusting ``root`` whose controller remembers at most
    ``CAPACITY`` tokens."""
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(certificate_pem(root))
    config = load_config(None, {**environ, **token_environ(bundle)})
    assert config.auth.token is not None
    controller = TokenAccessController(config.auth.token, cache_size=CAPACITY)
    return await aiohttp_client(create_app(config, controller=controller)), controller


@pytest.fixture
async def cached_registry(
    aiohttp_client: ClientMaker,
    registry_environ: dict[str, str],
    signer: TokenSigner,
    tmp_path: Path,
) -> CachedRegistry:
    return await start_cached_registry(aiohttp_client, registry_environ, tmp_path, signer.chain[0])


async def status_of(client: RegistryClient, headers: dict[str, str]) -> int:
    async with client.get(TAGS, headers=headers) as response:
        if response.status == 401:
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        return response.status


async def test_a_remembered_token_is_refused_at_the_first_request_after_expiry(
    cached_registry: CachedRegistry, signer: TokenSigner
) -> None:
    client, controller = cached_registry
    # Expired 56 s ago: accepted for 3-4 s more within the verifier's 60 s leeway.
    issued = int(time.time()) - 116
    headers = token(signer, PULL, lifetime=timedelta(seconds=60), now=issued)
    last_second = issued + 60 + 60  # exp + leeway: refused from this instant on
    assert await status_of(client, headers) == 404
    assert len(controller.verified) == 1  # remembered
    assert await status_of(client, headers) == 404  # from the memory
    await asyncio.sleep(max(0.0, last_second - time.time()) + 0.05)
    assert await status_of(client, headers) == 401
    assert len(controller.verified) == 0  # and forgotten


@pytest.mark.parametrize("expiring", ["signing certificate", "trusted root"])
async def test_a_remembered_token_is_refused_once_its_certificate_chain_expires(
    aiohttp_client: ClientMaker, registry_environ: dict[str, str], tmp_path: Path, expiring: str
) -> None:
    """Full verification refuses a chain past its ``not_valid_after``; a remembered token
    must stop at that instant too, though its own ``exp`` is minutes away."""
    root_key, leaf_key = generate_key("ES256"), generate_key("ES256")
    # X.509 times have whole seconds: 14-15 s from now, room for the first requests on a
    # loaded machine (4-5 s was too little there).
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
    root_end = expiry if expiring == "trusted root" else None
    root = make_cert(root_key, "root", root_key, "root", ca=True, end=root_end)
    leaf_end = expiry if expiring == "signing certificate" else None
    leaf = make_cert(leaf_key, "signer", root_key, "root", ca=False, end=leaf_end)
    signer = TokenSigner(leaf_key, [leaf])  # x5c: the leaf, issued by the trusted root
    client, controller = await start_cached_registry(
        aiohttp_client, registry_environ, tmp_path, root
    )
    headers = token(signer, PULL, lifetime=timedelta(minutes=5))
    assert await status_of(client, headers) == 404
    assert len(controller.verified) == 1  # remembered
    assert await status_of(client, headers) == 404  # from the memory
    await asyncio.sleep(max(0.0, expiry.timestamp() - time.time()) + 0.2)
    assert await status_of(client, headers) == 401
    assert len(controller.verified) == 0  # forgotten, and not remembered again


async def test_a_forged_signature_is_refused_while_the_genuine_token_is_remembered(
    cached_registry: CachedRegistry, signer: TokenSigner
) -> None:
    client, controller = cached_registry
    claims = Claims.issue(
        issuer=ISSUER,
        subject="alice",
        audience=SERVICE,
        lifetime=timedelta(minutes=5),
        access=[Scope.of("repository", "alice/app", ["pull"])],
    )
    genuine = signer.sign(claims)
    assert await status_of(client, {"Authorization": f"Bearer {genuine}"}) == 404
    # The same header and claims, signed by a key the registry does not trust.
    stranger_key = generate_key("ES256")
    stranger = TokenSigner(stranger_key, [self_signed_certificate(stranger_key, "mallory")])
    signing_input, _, signature = genuine.rpartition(".")
    foreign_signature = stranger.sign(claims).rpartition(".")[2]
    # One flipped bit of the genuine signature, too.
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for forged_signature in (foreign_signature, flipped):
        forged = f"{signing_input}.{forged_signature}"
        assert forged != genuine
        assert await status_of(client, {"Authorization": f"Bearer {forged}"}) == 401
    assert len(controller.verified) == 1  # failures are never remembered
    assert await status_of(client, {"Authorization": f"Bearer {genuine}"}) == 404


async def test_the_memory_stays_bounded_under_many_distinct_tokens(
    cached_registry: CachedRegistry, signer: TokenSigner
) -> None:
    client, controller = cached_registry
    tokens = [token(signer, PULL) for _ in range(3 * CAPACITY)]
    assert len({headers["Authorization"] for headers in tokens}) == len(tokens)
    for headers in tokens:
        assert await status_of(client, headers) == 404
        assert len(controller.verified) <= CAPACITY
    assert len(controller.verified) == CAPACITY
    # A forgotten token is verified again, not refused.
    assert await status_of(client, tokens[0]) == 404


def test_the_least_recently_used_token_is_forgotten_first() -> None:
    memory = VerifiedTokens(capacity=2)
    entry = VerifiedToken(Grant("alice"), valid_from=0, valid_until=2e9)
    first, second, third = (token_key(f"Bearer {n}") for n in "abc")
    memory.put(first, entry)
    memory.put(second, entry)
    assert memory.get(first, now=1e9) is entry.grant  # first is now the most recent
    memory.put(third, entry)
    assert memory.get(second, now=1e9) is None
    assert memory.get(first, now=1e9) is entry.grant
    assert memory.get(third, now=1e9) is entry.grant
    assert len(memory) == 2


def test_a_token_is_remembered_only_between_its_times() -> None:
    memory = VerifiedTokens()
    key = token_key("Bearer x")
    memory.put(key, VerifiedToken(Grant("alice"), valid_from=100, valid_until=200))
    assert memory.get(key, now=99.9) is None  # not yet valid: forgotten, verified again
    memory.put(key, VerifiedToken(Grant("alice"), valid_from=100, valid_until=200))
    assert memory.get(key, now=150) is not None
    assert memory.get(key, now=200) is None
    assert len(memory) == 0


def test_any_header_value_has_a_key() -> None:
    """aiohttp hands non-UTF-8 header bytes over as surrogates: never a 500 here."""
    keys = {token_key(value) for value in ("Bearer \udcff", "Bearer \ud800", "Bearer \xff")}
    assert len(keys) == 3 and all(len(key) == 32 for key in keys)
