"""``notifications`` in the registry's configuration: Distribution's keys typed and
checked, errors naming the key and never the value (a URL or header may hold a secret)."""

from __future__ import annotations

import datetime

import pytest

from registry.config import ConfigError, load_config, unsupported_settings
from registry.notifications.notifier import queue_directory


def test_distribution_keys_load_with_its_defaults() -> None:
    config = load_config(
        None,
        {
            "REGISTRY_NOTIFICATIONS": """
events: {includereferences: true}
endpoints:
  - name: listener
    url: https://user:secret@listener.example/events
  - name: off
    disabled: true
""",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/srv/registry",
        },
    )
    listener, off = config.notifications.endpoints
    assert listener.timeout == listener.backoff == datetime.timedelta(seconds=1)
    assert (listener.threshold, listener.queuelimit) == (10, 10_000)
    assert config.notifications.active_endpoints == [listener]
    assert off.url == ""
    assert config.notifications.events.includereferences
    assert unsupported_settings(config) == []
    assert str(queue_directory(config)) == "/srv/registry/_notifications"


def test_without_filesystem_storage_there_is_no_default_queue_directory() -> None:
    config = load_config(None, {"REGISTRY_STORAGE": "inmemory"})
    assert queue_directory(config) is None
    config = load_config(
        None, {"REGISTRY_STORAGE": "inmemory", "REGISTRY_NOTIFICATIONS_QUEUEDIRECTORY": "/q"}
    )
    assert str(queue_directory(config)) == "/q"


@pytest.mark.parametrize(
    ("endpoints", "key"),
    [
        ("[{url: 'http://x.example/'}]", "name"),
        ("[{name: a}]", "url"),
        ("[{name: a, url: 'ftp://secret.example/'}]", "url"),
        ("[{name: a, url: 'http://x.example/', ignore: {actions: [pul]}}]", "actions"),
        ("[{name: a, url: 'http://x.example/', queuelimit: 0}]", "queuelimit"),
        ("[{name: a, url: 'http://x.example/', backoff: -1s}]", "backoff"),
        ("[{name: a, url: 'http://x.example/'}, {name: a, url: 'http://y.example/'}]", "endpoints"),
    ],
)
def test_bad_endpoints_are_refused_naming_the_key(endpoints: str, key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, {"REGISTRY_NOTIFICATIONS_ENDPOINTS": endpoints})
    assert key in str(excinfo.value)
    assert "secret" not in str(excinfo.value)
