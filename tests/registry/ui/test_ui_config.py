"""The ``ui`` section: off by default, bounded session lifetime, known to the key list."""

from __future__ import annotations

import datetime

import pytest

from registry.config import ConfigError, load_config, unsupported_settings


def test_the_interface_is_off_by_default_and_its_keys_are_implemented() -> None:
    config = load_config(None, {})
    assert config.ui.enabled is False
    assert config.ui.session.lifetime == datetime.timedelta(hours=8)
    enabled = load_config(
        None,
        {
            "REGISTRY_UI_ENABLED": "true",
            "REGISTRY_UI_SESSION_LIFETIME": "30m",
            "REGISTRY_UI_TOKENREALM": "http://tokenauth:5001/auth",
        },
    )
    assert enabled.ui.enabled is True
    assert enabled.ui.session.lifetime == datetime.timedelta(minutes=30)
    assert unsupported_settings(enabled) == []


@pytest.mark.parametrize("lifetime", ["30s", "200h"])
def test_a_session_lifetime_out_of_bounds_is_refused_naming_the_key(lifetime: str) -> None:
    with pytest.raises(ConfigError, match=r"ui\.session\.lifetime"):
        load_config(None, {"REGISTRY_UI_SESSION_LIFETIME": lifetime})


def test_a_token_realm_that_is_not_an_http_url_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"ui\.tokenrealm"):
        load_config(None, {"REGISTRY_UI_TOKENREALM": "tokenauth:5001/auth"})
