"""The health checks' state rules (Distribution's thresholdUpdater) and their config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from registry.config import ConfigError, load_config
from registry.config_health import public_uri
from registry.health.monitor import CheckFailed, PeriodicCheck


async def _passes() -> None:
    pass


def test_a_threshold_needs_that_many_failures_in_a_row_and_one_success_clears_it() -> None:
    check = PeriodicCheck("c", _passes, interval=1.0, threshold=3)
    check.update("down")
    check.update("down")
    assert check.error is None  # two failures: not yet
    check.update(None)
    check.update("down")
    check.update("down")
    assert check.error is None  # the success started the count again
    check.update("still down")
    assert check.error == "still down"  # the latest error is the one reported
    check.update(None)
    assert check.error is None


@pytest.mark.parametrize("threshold", [0, 1])
def test_without_a_threshold_one_failure_is_enough(threshold: int) -> None:
    check = PeriodicCheck("c", _passes, interval=1.0, threshold=threshold)
    check.update("down")
    assert check.error == "down"


async def test_a_hung_check_fails_at_its_timeout() -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)

    async def refuses() -> None:
        raise CheckFailed("refused")

    hung = PeriodicCheck("hung", hangs, interval=60.0, timeout=0.05)
    await hung.run_once()
    assert hung.error == "timed out after 0.05s"
    refused = PeriodicCheck("refused", refuses, interval=60.0)
    await refused.run_once()
    assert refused.error == "refused"


def test_a_uri_is_named_without_its_credentials() -> None:
    assert public_uri("https://u:p@example.com:8443/x?y=1") == "https://example.com:8443/x?y=1"
    assert public_uri("http://[::1]:80/") == "http://[::1]:80/"
    assert public_uri("http://u:p@[::1]/") == "http://[::1]/"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("tcp: [{addr: 'a:1'}, {addr: 'a:1'}]", "tcp"),
        ("http: [{uri: 'http://u:p@h/'}, {uri: 'http://h/'}]", "http"),
        ("file: [{file: redis}]", "file"),
        ("tcp: [{addr: ':6379'}]", "addr"),
        ("http: [{uri: 'ftp://x/'}]", "uri"),
        ("file: [{interval: 1s}]", "file"),
        ("storagedriver: {interval: -1s}", "interval"),
    ],
)
def test_bad_health_settings_name_the_key(tmp_path: Path, section: str, key: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(f"version: 0.1\nhealth:\n  {section}\n")
    with pytest.raises(ConfigError, match=key):
        load_config(path, {})
