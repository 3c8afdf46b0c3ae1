"""The JWKS endpoint (health: test_health.py); tokens verify against the published JWKS
alone."""

from __future__ import annotations

from shared.jose_keys import keys_from_jwks, thumbprint
from shared.token import TokenVerifier
from tests.tokenauth.conftest import ISSUER, SERVICE, ClientFactory, Setup, TokenClient, fetch_token


async def test_jwks_publishes_the_signing_key(client: TokenClient, setup: Setup) -> None:
    async with client.get("/.well-known/jwks.json") as response:
        assert response.status == 200
        jwks = await response.json()
    (key,) = jwks["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["use"] == "sig"
    assert key["alg"] == "ES256" and "d" not in key and len(key["x5c"]) == 1
    assert thumbprint(keys_from_jwks(jwks)[key["kid"]]) == thumbprint(setup.key.public_key())
    _, body, _ = await fetch_token(client, "repository:alice/a:pull", auth=("alice", "alice-pw"))
    verifier = TokenVerifier(issuer=ISSUER, audience=SERVICE, jwks=jwks)
    assert verifier.verify(body["token"]).subject == "alice"


async def test_configurable_token_path(make_client: ClientFactory) -> None:
    client = await make_client({"TOKENAUTH_HTTP_PATH": "/v2/token"})
    async with client.get("/v2/token", params={"service": SERVICE}) as response:
        assert response.status == 200
    async with client.get("/auth", params={"service": SERVICE}) as response:
        assert response.status == 404
