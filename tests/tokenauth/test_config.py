"""tokenauth's configuration: defaults, TOKENAUTH_* overrides, bounds, paths, start-up errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.config import ConfigError
from tests.tokenauth.conftest import Setup
from tokenauth.app import create_app
from tokenauth.config import load_config, split_address
from tokenauth.keygen import certificate_pem, generate_key, self_signed_certificate


def test_defaults_and_relative_paths(setup: Setup) -> None:
    config = load_config(setup.config, {})
    assert config.token.lifetime == timedelta(minutes=5)
    assert config.token.refreshlifetime == timedelta(days=30)
    assert config.http.path == "/auth"
    assert Path(config.token.key) == setup.directory / "token.key"
    assert [Path(p) for p in config.users] == [setup.users_file]
    assert Path(config.acl) == setup.acl_file


def test_environment_overrides(setup: Setup) -> None:
    config = load_config(
        setup.config,
        {
            "TOKENAUTH_TOKEN_LIFETIME": "10m",
            "TOKENAUTH_TOKEN_SERVICES": "[a.example, b.example]",
            "TOKENAUTH_HTTP_ADDR": "127.0.0.1:6001",
            "TOKENAUTH_RATELIMIT_ACCOUNTFAILURES": "9",
            "TOKENAUTH_USERS_1": "/elsewhere/more.htpasswd",
        },
    )
    assert config.token.lifetime == timedelta(minutes=10)
    assert config.token.services == ["a.example", "b.example"]
    assert config.http.addr == "127.0.0.1:6001"
    assert config.ratelimit.accountfailures == 9
    assert config.users[1] == "/elsewhere/more.htpasswd"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TOKENAUTH_TOKEN_LIFETIME": "59s"}, "token.lifetime: must be between 60s and 24h"),
        ({"TOKENAUTH_TOKEN_LIFETIME": "25h"}, "token.lifetime"),
        ({"TOKENAUTH_TOKEN_REFRESHLIFETIME": "1m"}, "token.refreshlifetime"),
        ({"TOKENAUTH_TOKEN_ISSUER": '""'}, "token.issuer: must be set"),
        ({"TOKENAUTH_TOKEN_SERVICES": "[]"}, "token.services: must be set"),
        ({"TOKENAUTH_TOKEN_SERVICES": "['tokenauth-refresh:x']"}, "reserved"),
        ({"TOKENAUTH_HTTP_PATH": "auth"}, "http.path"),
        ({"TOKENAUTH_HTTP_TLS_CERTIFICATE": "x.pem"}, "http.tls.key: must be set"),
        ({"TOKENAUTH_RATELIMIT_IPFAILURES": "0"}, "ratelimit.ipfailures"),
        ({"TOKENAUTH_RATELIMIT_CONCURRENTCHECKS": "-1"}, "ratelimit.concurrentchecks"),
        ({"TOKENAUTH_LOGLEVEL": "chatty"}, "loglevel"),
        ({"TOKENAUTH_NOPE": "1"}, None),
    ],
)
def test_invalid_settings_name_the_key(
    setup: Setup, environ: dict[str, str], message: str | None
) -> None:
    if message is None:  # an unknown variable is only warned about, as the registry does
        load_config(setup.config, environ)
        return
    with pytest.raises(ConfigError, match=message):
        load_config(setup.config, environ)


def test_start_up_refuses_broken_files(setup: Setup) -> None:
    with pytest.raises(ConfigError, match="users"):
        create_app(load_config(setup.config, {"TOKENAUTH_USERS": "[missing.htpasswd]"}))
    (setup.directory / "junk.key").write_text("not a key")
    with pytest.raises(ConfigError, match=r"token\.key"):
        create_app(load_config(setup.config, {"TOKENAUTH_TOKEN_KEY": "junk.key"}))
    other = self_signed_certificate(generate_key(), "someone else")
    (setup.directory / "other.crt").write_bytes(certificate_pem(other))
    with pytest.raises(ConfigError, match=r"token\.certificate"):
        create_app(load_config(setup.config, {"TOKENAUTH_TOKEN_CERTIFICATE": "other.crt"}))


def test_split_address() -> None:
    assert split_address(":5001") == (None, 5001)
    assert split_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert split_address("[::1]:443") == ("::1", 443)
    for bad in ("5001", "host:", "host:99999"):
        with pytest.raises(ConfigError):
            split_address(bad)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("", "is empty: expected PEM certificates"), ("junk\n", "holds no PEM certificate")],
)
def test_an_unusable_certificate_file_names_the_key_and_the_file(
    setup: Setup, content: str, problem: str
) -> None:
    (setup.directory / "junk.crt").write_text(content)
    config = load_config(setup.config, {"TOKENAUTH_TOKEN_CERTIFICATE": "junk.crt"})
    with pytest.raises(ConfigError) as raised:
        create_app(config)
    assert str(raised.value) == f"token.certificate: {setup.directory / 'junk.crt'} {problem}"
