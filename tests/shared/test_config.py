"""The generic loader: YAML into frozen dataclasses, Distribution-style env overrides."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from shared.config import (
    VARIANT,
    ConfigError,
    InvalidSetting,
    OneOf,
    changed_settings,
    load_config,
    meta,
)
from shared.durations import parse_duration


@dataclass(frozen=True)
class Disk:
    root: str = "/data"
    threads: int = 4


@dataclass(frozen=True)
class Memory:
    """No parameters."""


@dataclass(frozen=True)
class Backend(OneOf):
    DEFAULT_VARIANT: ClassVar[str | None] = "disk"
    VARIANT_KIND: ClassVar[str] = "backend"

    disk: Disk | None = field(default=None, metadata=VARIANT)
    memory: Memory | None = field(default=None, metadata=VARIANT)
    cloud: dict[str, Any] | None = field(default=None, metadata=VARIANT)
    readonly: bool = False


@dataclass(frozen=True)
class Login:
    user: str = ""
    password: str = ""

    def __post_init__(self) -> None:
        if self.user and not self.password:
            raise InvalidSetting("password", "must be set when user is")


@dataclass(frozen=True)
class Server:
    addr: str = ":8080"
    ratio: float = 0.5
    debug: bool = False
    timeout: datetime.timedelta = datetime.timedelta(seconds=30)
    hosts: list[str] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    login: Login = field(default_factory=Login)
    level: str = field(default="info", metadata=meta(check=lambda v: _level(v)))
    max_size: int = field(default=10, metadata=meta(key="max-size", env="MAXSIZE"))


def _level(value: str) -> str:
    if value.lower() not in ("info", "debug"):
        raise ValueError("expected info or debug")
    return value.lower()


@dataclass(frozen=True)
class Schema:
    version: str = "1.0"
    server: Server = field(default_factory=Server)
    backend: Backend = field(default_factory=Backend)
    extra: dict[str, Any] = field(default_factory=dict)
    optional: Login | None = None


def load(tmp_path: Path, text: str | None = None, **environ: str) -> Schema:
    path = None
    if text is not None:
        path = tmp_path / "config.yml"
        path.write_text(text)
    return load_config(Schema, path, environ, "APP")


def error(tmp_path: Path, text: str | None = None, **environ: str) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text, **environ)
    return str(excinfo.value)


# --- reading YAML ------------------------------------------------------------------------


def test_no_file_and_no_environment_gives_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config == Schema()
    assert config.backend.disk == Disk()
    assert config.backend.variant_name == "disk"


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing here\n") == Schema()


def test_values_are_read_into_their_types(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
version: 1.0
server:
  addr: localhost:9000
  ratio: 2
  debug: yes
  timeout: 1h30m
  hosts: [a.example, b.example]
  headers:
    X-Content-Type-Options: [nosniff]
  labels: {team: 42}
  login: {user: alice, password: 0123}
  level: DEBUG
  max-size: 0x10
extra:
  anything: [1, {two: 3.0}]
""",
    )
    server = config.server
    assert config.version == "1.0"  # a YAML float read as a string keeps its text
    assert server.addr == "localhost:9000"
    assert server.ratio == 2.0
    assert server.debug is True
    assert server.timeout == datetime.timedelta(hours=1, minutes=30)
    assert server.hosts == ["a.example", "b.example"]
    assert server.headers == {"X-Content-Type-Options": ["nosniff"]}
    assert server.labels == {"team": "42"}
    assert server.login == Login(user="alice", password="0123")
    assert server.level == "debug"  # normalised by the check
    assert server.max_size == 16
    assert config.extra == {"anything": [1, {"two": 3.0}]}


def test_a_bare_integer_duration_is_nanoseconds_as_in_go(tmp_path: Path) -> None:
    config = load(tmp_path, "server: {timeout: 5000000000}")
    assert config.server.timeout == datetime.timedelta(seconds=5)


def test_null_keeps_the_default(tmp_path: Path) -> None:
    config = load(tmp_path, "server:\n  addr:\n  hosts: ~\n")
    assert config.server.addr == ":8080"
    assert config.server.hosts == []


def test_a_repeated_key_is_merged_or_replaced_as_go_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Go's YAML decodes a repeated section into the same struct or map, and a repeated
    # plain value replaces the earlier one; Distribution's own sample repeats a key.
    text = """\
server: {addr: ':1', debug: true, hosts: [a], labels: {x: '1'}}
server: {addr: ':2', hosts: [b], labels: {y: '2'}, login: {user: u, password: s3cr3t}}
"""
    with caplog.at_level(logging.WARNING, logger="shared.config"):
        server = load(tmp_path, text).server
    assert (server.addr, server.debug, server.hosts) == (":2", True, ["b"])
    assert server.labels == {"x": "1", "y": "2"}
    where = f"({tmp_path / 'config.yml'}, line 2)"
    assert [r.getMessage() for r in caplog.records] == [
        f"configuration key {key} is given twice {where}"
        for key in ("server", "server.addr", "server.hosts", "server.labels")
    ]
    assert "s3cr3t" not in caplog.text


def test_yaml_merge_keys_are_honoured(tmp_path: Path) -> None:
    text = "extra: {base: &b {user: bob, password: pw}}\nserver:\n  login:\n    <<: *b\n"
    assert load(tmp_path, text).server.login == Login(user="bob", password="pw")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: {addr: [a]}", "server.addr: expected a string"),
        ("server: {ratio: high}", "server.ratio: expected a number"),
        ("server: {debug: 1}", "server.debug: expected true or false"),
        ("server: {max-size: 1.5}", "server.max-size: expected an integer"),
        ("server: {timeout: 10 s}", "server.timeout: expected a duration"),
        ("server: {timeout: 1.5}", "server.timeout: expected a duration"),
        ("server: {hosts: a.example}", "server.hosts: expected a list"),
        ("server: {headers: {X-A: nosniff}}", "server.headers.X-A: expected a list"),
        ("server: {hosts: [[a]]}", "server.hosts[0]: expected a string"),
        ("server: 5", "server: expected a mapping"),
        ("server: {level: trace}", "server.level: expected info or debug"),
        ("server: {login: {user: alice}}", "server.login.password: must be set when user is"),
        ("server: {adress: x}", "server.adress: unknown key (known keys here: addr, ratio"),
    ],
)
def test_a_bad_file_names_the_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(expected)
    assert "config.yml, line" in message


def test_errors_never_quote_the_value(tmp_path: Path) -> None:
    message = error(tmp_path, "server: {debug: hunter2-secret}")
    assert "hunter2" not in message


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(Schema, tmp_path / "missing.yml", {}, "APP")
    assert "not valid YAML" in error(tmp_path, "server: [unclosed")
    assert "config.yml, line 2, column 10: not valid YAML" in error(
        tmp_path, "server:\n  addr: x: y\n"
    )
    assert "must be a YAML mapping" in error(tmp_path, "- a list\n")


# --- one-of sections ---------------------------------------------------------------------


def test_a_one_of_section_takes_a_variant_name_or_mapping(tmp_path: Path) -> None:
    assert load(tmp_path, "backend: memory").backend == Backend(memory=Memory())
    config = load(tmp_path, "backend: {memory: , readonly: true}")
    assert config.backend.variant_name == "memory"
    assert config.backend.disk is None
    assert config.backend.readonly is True
    assert load(tmp_path, "backend: {cloud: {bucket: b}}").backend.cloud == {"bucket": "b"}


def test_a_one_of_section_without_a_variant_uses_the_default(tmp_path: Path) -> None:
    config = load(tmp_path, "backend: {readonly: true}")
    assert config.backend.disk == Disk()


def test_more_than_one_variant_is_an_error_naming_them(tmp_path: Path) -> None:
    message = error(tmp_path, "backend: {disk: {root: /x}, memory: }")
    assert message.startswith("backend: more than one backend given (disk, memory)")
    assert "backend: expected a mapping or a backend (disk, memory, cloud)" in error(
        tmp_path, "backend: tape"
    )


# --- environment overrides ---------------------------------------------------------------


def test_environment_overrides_replace_values_parsed_as_yaml(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "server: {addr: ':1', hosts: [a]}",
        APP_SERVER_ADDR=":2",
        APP_SERVER_DEBUG="true",
        APP_SERVER_TIMEOUT="2m",
        APP_SERVER_HOSTS="[x, y]",
        APP_SERVER_MAXSIZE="7",
        APP_SERVER_LOGIN_USER="carol",
        APP_SERVER_LOGIN_PASSWORD="123",
        APP_VERSION="1.0",
    )
    assert config.server.addr == ":2"
    assert config.server.debug is True
    assert config.server.timeout == datetime.timedelta(minutes=2)
    assert config.server.hosts == ["x", "y"]
    assert config.server.max_size == 7
    assert config.server.login == Login(user="carol", password="123")


def test_overrides_apply_in_sorted_order_so_sections_come_first(tmp_path: Path) -> None:
    # APP_SERVER replaces the whole section, then the more specific variable lands in it,
    # whatever order the mapping lists them in.
    config = load(tmp_path, "server: {debug: true}", APP_SERVER_ADDR=":3", APP_SERVER="{ratio: 3}")
    assert config.server.addr == ":3"
    assert config.server.ratio == 3.0
    assert config.server.debug is False  # the section was replaced


def test_free_map_keys_match_case_insensitively_and_new_ones_are_lower_case(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        "server: {headers: {X-Frame-Options: [DENY]}}",
        **{"APP_SERVER_HEADERS_X-FRAME-OPTIONS": "[SAMEORIGIN]", "APP_SERVER_HEADERS_X-NEW": "[1]"},
    )
    assert config.server.headers == {"X-Frame-Options": ["SAMEORIGIN"], "x-new": ["1"]}
    config = load(tmp_path, APP_EXTRA_A_B="[1, 2]", APP_EXTRA_A_C="x")
    assert config.extra == {"a": {"b": [1, 2], "c": "x"}}


def test_list_items_are_addressed_by_index(tmp_path: Path) -> None:
    config = load(
        tmp_path, "server: {hosts: [a, b]}", APP_SERVER_HOSTS_1="c", APP_SERVER_HOSTS_2="d"
    )
    assert config.server.hosts == ["a", "c", "d"]
    message = error(tmp_path, APP_SERVER_HOSTS_5="x")
    assert "server.hosts: '5' is not an index of this list" in message
    assert "(environment: APP_SERVER_HOSTS_5)" in message
    assert "is not an index" in error(tmp_path, APP_SERVER_HOSTS_FIRST="x")
    assert "is not an index" in error(tmp_path, **{"APP_SERVER_HOSTS_²": "x"})
    message = error(tmp_path, "server: {hosts: oops}", APP_SERVER_HOSTS_0="x")
    assert message == "server.hosts: expected a list (environment: APP_SERVER_HOSTS_0)"


def test_a_variant_is_selected_by_name_then_filled(tmp_path: Path) -> None:
    config = load(
        tmp_path, "backend: {disk: {root: /x}}", APP_BACKEND="cloud", APP_BACKEND_CLOUD_BUCKET="b"
    )
    assert config.backend.variant_name == "cloud"
    assert config.backend.cloud == {"bucket": "b"}
    config = load(tmp_path, APP_BACKEND="memory", APP_BACKEND_READONLY="true")
    assert config.backend == Backend(memory=Memory(), readonly=True)


def test_conflicting_variants_from_the_environment_name_the_variables(tmp_path: Path) -> None:
    message = error(tmp_path, APP_BACKEND="memory", APP_BACKEND_DISK_ROOT="/x")
    assert "more than one backend given (disk, memory)" in message
    assert "APP_BACKEND, APP_BACKEND_DISK_ROOT" in message


def test_a_bad_override_names_the_variable_and_not_the_value(tmp_path: Path) -> None:
    message = error(tmp_path, APP_SERVER_DEBUG="s3cr3t-value")
    assert message.startswith("server.debug: expected true or false")
    assert "APP_SERVER_DEBUG" in message
    assert "s3cr3t" not in message
    message = error(tmp_path, APP_SERVER_LOGIN_PASSWORD="[s3cr3t-value")
    assert "APP_SERVER_LOGIN_PASSWORD: the value is not valid YAML" in message
    assert "s3cr3t" not in message


def test_unknown_variables_are_warned_about_without_their_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.config"):
        config = load(
            tmp_path,
            APP_AUTH_FILE="s3cr3t-value",
            APP_SERVER_ADDR_PORT="s3cr3t-value",
            APP_server_addr="s3cr3t-value",
            APP_SERVER_ADDR=":9",
        )
    assert config.server.addr == ":9"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3
    assert all("names no configuration key" in m for m in warned)
    assert "APP_AUTH_FILE" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_other_prefixes_are_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(Schema, None, {"APPX_SERVER_ADDR": "x", "OTHER": "y"}, "APP")
    assert config == Schema()
    assert not caplog.records


def test_an_empty_value_restores_the_default(tmp_path: Path) -> None:
    assert load(tmp_path, "server: {addr: ':1'}", APP_SERVER_ADDR="").server.addr == ":8080"


def test_an_optional_section_appears_when_a_variable_fills_it(tmp_path: Path) -> None:
    assert load(tmp_path).optional is None
    config = load(tmp_path, APP_OPTIONAL_USER="u", APP_OPTIONAL_PASSWORD="p")
    assert config.optional == Login(user="u", password="p")


# --- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", datetime.timedelta(0)),
        ("10s", datetime.timedelta(seconds=10)),
        ("168h", datetime.timedelta(days=7)),
        ("1h30m", datetime.timedelta(hours=1, minutes=30)),
        ("-1.5h", -datetime.timedelta(minutes=90)),
        ("300ms", datetime.timedelta(milliseconds=300)),
        ("2us", datetime.timedelta(microseconds=2)),
        ("2µs", datetime.timedelta(microseconds=2)),
        (".5s", datetime.timedelta(milliseconds=500)),
    ],
)
def test_go_durations(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "s", "--5s", "5 s", "1d", ".s", "0s0"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_changed_settings_lists_what_differs_from_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "server: {addr: ':1', login: {user: u, password: p}}\nbackend: cloud")
    assert changed_settings(config) == [
        "server.addr",
        "server.login.user",
        "server.login.password",
        "backend.disk",
        "backend.cloud",
    ]
    assert changed_settings(Schema()) == []


def test_results_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.addr = "x"  # type: ignore[misc]
