"""``token.keydir``: keygen --dir/--rotate, what JWKS publishes, refresh tokens across a
rotation, and a half-done rotation leaving the keys in force."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.jose_keys import thumbprint
from shared.keyfiles import read_certificates, read_jwks
from shared.token import TokenVerifier
from tests.tokenauth.conftest import ISSUER, SERVICE, USERS, Setup, TokenClient, fetch_token
from tests.tokenauth.test_oauth import post
from tokenauth import keydir
from tokenauth.__main__ import main
from tokenauth.app import create_app
from tokenauth.config import ConfigError, load_config
from tokenauth.keydir import KeyOptions
from tokenauth.keygen import key_pem
from tokenauth.keys import ISSUER as ISSUER_KEY

Start = Callable[[], Awaitable[TokenClient]]


def kids(directory: Path, name: str) -> str:
    key = read_certificates(directory / name)[0].public_key()
    return thumbprint(key)  # type: ignore[arg-type]


@pytest.fixture
def keys(setup: Setup) -> Path:
    directory = setup.directory / "keys"
    assert main(["keygen", "--dir", str(directory)]) == 0
    text = setup.config.read_text().replace("  key: token.key\n  certificate: token.crt\n", "")
    setup.config.write_text(text.replace("token:\n", "token:\n  keydir: keys\n"))
    return directory


@pytest.fixture
async def start(
    aiohttp_client: Callable[[web.Application], Awaitable[TokenClient]], setup: Setup, keys: Path
) -> Start:
    async def start() -> TokenClient:
        return await aiohttp_client(create_app(load_config(setup.config, {})))

    return start


def rotate(directory: Path) -> None:
    assert main(["keygen", "--dir", str(directory), "--rotate"]) == 0


async def jwks_kids(client: TokenClient) -> list[str]:
    async with client.get("/.well-known/jwks.json") as response:
        return [entry["kid"] for entry in (await response.json())["keys"]]


async def token_kid(client: TokenClient) -> str:
    status, body, _ = await fetch_token(client, auth=("alice", USERS["alice"]))
    assert status == 200, body
    return str(jwt.get_unverified_header(body["token"])["kid"])


async def test_rotation_moves_keys_along_and_is_taken_without_restart(
    start: Start, keys: Path
) -> None:
    client = await start()
    current, following = kids(keys, "current.crt"), kids(keys, "next.crt")
    assert await jwks_kids(client) == [current, following]
    assert await token_kid(client) == current

    rotate(keys)
    assert kids(keys, "previous.crt") == current and kids(keys, "current.crt") == following
    assert not (keys / "previous.key").exists()  # an old private key is never kept
    client.app[ISSUER_KEY].signer.reload_if_changed()  # what the watcher does every second
    newest = kids(keys, "next.crt")
    assert await jwks_kids(client) == [following, newest, current]
    assert await token_kid(client) == following
    # The files for registries hold all three keys.
    bundle = [thumbprint(c.public_key()) for c in read_certificates(keys / "bundle.crt")]  # type: ignore[arg-type]
    assert sorted(bundle) == sorted([current, following, newest])
    assert sorted(k["kid"] for k in read_jwks(keys / "jwks.json")["keys"]) == sorted(bundle)


async def test_registry_bundle_of_before_the_rotation_accepts_tokens_of_after(
    start: Start, keys: Path
) -> None:
    bundle = read_certificates(keys / "bundle.crt")  # what a registry was given
    client = await start()
    _, before, _ = await fetch_token(client, "repository:alice/x:pull", auth=("alice", "alice-pw"))
    rotate(keys)
    client.app[ISSUER_KEY].signer.reload_if_changed()
    _, after, _ = await fetch_token(client, "repository:alice/x:pull", auth=("alice", "alice-pw"))
    verifier = TokenVerifier(issuer=ISSUER, audience=SERVICE, trusted_certs=bundle)
    for body in (before, after):
        assert verifier.verify(body["token"]).subject == "alice"


async def test_refresh_token_survives_one_rotation_not_two(start: Start, keys: Path) -> None:
    client = await start()
    status, body = await post(
        client, grant_type="password", username="alice", password="alice-pw", access_type="offline"
    )
    assert status == 200, body
    refresh = body["refresh_token"]
    rotate(keys)
    client.app[ISSUER_KEY].signer.reload_if_changed()
    status, body = await post(client, grant_type="refresh_token", refresh_token=refresh)
    assert status == 200, body  # signed by what is now the previous key
    rotate(keys)
    client.app[ISSUER_KEY].signer.reload_if_changed()
    status, body = await post(client, grant_type="refresh_token", refresh_token=refresh)
    assert status == 401, body  # its key is no longer published


async def test_half_done_rotation_keeps_the_keys_in_force(start: Start, keys: Path) -> None:
    client = await start()
    signing = client.app[ISSUER_KEY].signer
    current = kids(keys, "current.crt")
    # As between two renames of a rotation: the next key in place of the current one,
    # the current certificate not yet replaced.
    (keys / "current.key").write_bytes((keys / "next.key").read_bytes())
    assert signing.reload_if_changed() is False
    assert signing.error is not None and "current.key" in signing.error
    assert await token_kid(client) == current
    async with client.get("/health") as response:
        assert (await response.json())["signing_key"]["error"] == signing.error
    # The rest of the rotation arrives: the keys are taken.
    (keys / "current.crt").write_bytes((keys / "next.crt").read_bytes())
    assert signing.reload_if_changed() is True and signing.error is None
    assert await token_kid(client) == kids(keys, "next.crt")


def test_keydir_with_key_is_refused(setup: Setup, keys: Path) -> None:
    with pytest.raises(ConfigError, match="keydir"):
        load_config(setup.config, {"TOKENAUTH_TOKEN_KEY": "token.key"})


def test_rotate_without_keys_fails_and_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert main(["keygen", "--dir", str(tmp_path / "none"), "--rotate"]) == 1
    keydir.initialise(tmp_path / "k", KeyOptions())
    with pytest.raises(FileExistsError):
        keydir.initialise(tmp_path / "k", KeyOptions())
    assert main(["keygen", "--dir", str(tmp_path / "k")]) == 1


async def test_a_key_refused_by_the_signer_is_an_error_not_a_crash(
    start: Start, keys: Path
) -> None:
    """An RSA key under 2048 bits (BadAlgorithm, not ValueError) must not stop the watcher."""
    client = await start()
    signing = client.app[ISSUER_KEY].signer
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    (keys / "next.key").write_bytes(key_pem(weak))
    assert signing.reload_if_changed() is False
    assert signing.error is not None
    assert await token_kid(client) == kids(keys, "current.crt")
