"""The authenticator chain's shape: config picks and orders the members, the first that
knows a user decides (a "no" is final), and the audit line names who decided."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from shared.config import ConfigError
from tests.tokenauth.conftest import CONFIG, ClientFactory, Setup, fetch_token
from tokenauth.config import load_config

# Knows only alice, whose password here is "ext-pw" (the users file has "alice-pw").
SCRIPT = """\
import sys
user, _, password = sys.stdin.read().partition(" ")
if user != "alice":
    sys.exit(2)
sys.exit(0 if password == "ext-pw" else 1)
"""


def with_program(setup: Setup, order: str) -> None:
    script = setup.directory / "alice.py"
    script.write_text(SCRIPT)
    setup.config.write_text(
        CONFIG + f"extauth:\n  command: {sys.executable}\n  args: [{script}]\nauthn: {order}\n"
    )


@pytest.mark.parametrize(
    ("order", "accepted", "refused", "decided_by"),
    [
        ("[extauth, users]", "ext-pw", "alice-pw", "extauth"),
        ("[users, extauth]", "alice-pw", "ext-pw", "users"),
    ],
)
async def test_the_first_authenticator_that_knows_the_user_decides(
    make_client: ClientFactory,
    setup: Setup,
    caplog: pytest.LogCaptureFixture,
    order: str,
    accepted: str,
    refused: str,
    decided_by: str,
) -> None:
    with_program(setup, order)
    client = await make_client()
    with caplog.at_level(logging.INFO, logger="tokenauth.audit"):
        assert (await fetch_token(client, auth=("alice", accepted)))[0] == 200
        assert (await fetch_token(client, auth=("alice", refused)))[0] == 401
        # bob is not the program's: with either order the users file decides.
        assert (await fetch_token(client, auth=("bob", "bob-pw")))[0] == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tokenauth.audit"]
    assert [line["authenticator"] for line in lines] == [decided_by, decided_by, "users"]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("authn: [ldap]\n", "authn"),
        ("authn: [users, bogus]\n", "authn"),
        ("authn: [users, users]\n", "authn"),
        ("authz: [extauthz]\n", "authz"),
    ],
)
def test_a_chain_naming_what_is_not_configured_is_refused(
    setup: Setup, extra: str, key: str
) -> None:
    setup.config.write_text(CONFIG + extra)
    with pytest.raises(ConfigError, match=f"^{key}: "):
        load_config(setup.config, {})
