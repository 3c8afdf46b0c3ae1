"""The ``proxy`` section: Distribution's single-upstream keys and portside's upstreams."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from registry.config import ConfigError, load_config, unsupported_settings


def test_registry_2_s_mirror_configuration_loads_unchanged(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yml"
    config_file.write_text(
        "version: 0.1\n"
        "proxy:\n"
        "  remoteurl: https://registry-1.docker.io\n"
        "  username: hubuser\n"
        "  password: hubtoken\n"
        "  ttl: 72h\n"
    )
    config = load_config(config_file, {})
    (upstream,) = config.proxy.all_upstreams()
    assert upstream.prefix == ""
    assert upstream.remoteurl == "https://registry-1.docker.io"
    assert (upstream.username, upstream.password) == ("hubuser", "hubtoken")
    assert upstream.ttl == datetime.timedelta(hours=72)
    assert unsupported_settings(config) == []


def test_the_registry_proxy_variables() -> None:
    config = load_config(
        None,
        {
            "REGISTRY_PROXY_REMOTEURL": "http://upstream:5000/",
            "REGISTRY_PROXY_USERNAME": "u",
            "REGISTRY_PROXY_PASSWORD": "p",
            "REGISTRY_PROXY_MAXDOWNLOADS": "4",
        },
    )
    assert config.proxy.enabled
    assert config.proxy.maxdownloads == 4
    assert unsupported_settings(config) == []
    assert config.proxy.remoteurl == "http://upstream:5000"  # no trailing slash
    assert config.proxy.ttl == datetime.timedelta(hours=168)  # Distribution's default


def test_many_upstreams_from_the_environment() -> None:
    upstreams = [
        {"prefix": "hub", "remoteurl": "https://registry-1.docker.io", "library": True},
        {"prefix": "ghcr", "remoteurl": "https://ghcr.io", "ttl": "0s", "servestale": False},
    ]
    config = load_config(None, {"REGISTRY_PROXY_UPSTREAMS": json.dumps(upstreams)})
    hub, ghcr = config.proxy.all_upstreams()
    assert hub.library and hub.servestale
    assert ghcr.ttl == datetime.timedelta(0) and not ghcr.servestale
    assert unsupported_settings(config) == []


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        (
            {
                "REGISTRY_PROXY_REMOTEURL": "https://a.example",
                "REGISTRY_PROXY_UPSTREAMS": '[{prefix: x, remoteurl: "https://b.example"}]',
            },
            "upstreams",
        ),
        ({"REGISTRY_PROXY_UPSTREAMS": '[{remoteurl: "https://b.example"}]'}, "upstreams"),
        ({"REGISTRY_PROXY_UPSTREAMS": "[{prefix: x}]"}, "remoteurl"),
        (
            {
                "REGISTRY_PROXY_UPSTREAMS": '[{prefix: x, remoteurl: "https://a.example"},'
                ' {prefix: x, remoteurl: "https://b.example"}]'
            },
            "upstreams",
        ),
        ({"REGISTRY_PROXY_REMOTEURL": "ftp://a.example"}, "remoteurl"),
        ({"REGISTRY_PROXY_REMOTEURL": "https://user:secret@a.example"}, "remoteurl"),
        ({"REGISTRY_PROXY_UPSTREAMS": '[{prefix: "Bad!", remoteurl: "https://a"}]'}, "prefix"),
        ({"REGISTRY_PROXY_TTL": "-1h"}, "ttl"),
        ({"REGISTRY_PROXY_MAXDOWNLOADS": "0"}, "maxdownloads"),
    ],
)
def test_bad_proxy_settings_name_the_key_never_the_value(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, environ)
    assert key in str(raised.value)
    assert "secret" not in str(raised.value)
