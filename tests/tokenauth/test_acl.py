"""The ACL language: matching, placeholders, captures, CIDRs, validation and live reload."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

import pytest
import yaml

from shared.config import ConfigError
from shared.scope import Scope, parse_scope
from tests.tokenauth.conftest import ACL, ClientFactory, Setup, TokenClient, fetch_token, granted
from tokenauth.acl import Acl, AclError, AclFile, parse_acl
from tokenauth.app import create_app
from tokenauth.config import load_config


def acl_of(rules: list[dict[str, Any]]) -> Acl:
    return parse_acl({"acl": rules})


def grant(
    acl: Acl, account: str, scope: str, service: str = "registry.test", ip: str | None = None
) -> tuple[str, ...]:
    address = ipaddress.ip_address(ip) if ip else None
    return acl.decide(account, service, address, parse_scope(scope)).granted.actions


DOC_ACL = parse_acl(yaml.safe_load(ACL))


@pytest.mark.parametrize(
    ("account", "scope", "expected"),
    [
        ("admin", "registry:catalog:*", ("*",)),
        ("admin", "repository:anything/at/all:pull,push,delete", ("delete", "pull", "push")),
        ("alice", "repository:alice/app:push,pull", ("pull", "push")),
        ("alice", "repository:alice/deep/nested:delete", ("delete",)),
        ("alice", "repository:alice:pull", ()),  # `alice/*` needs something after the slash
        ("alice", "repository:bob/app:pull", ()),
        ("alice", "registry:catalog:*", ()),
        ("ci", "repository:ci/tool:*", ("pull", "push")),
        ("ci", "repository:ci/tool:delete", ()),
        ("ci", "repository:other/tool:push", ()),
        ("bob", "repository:public/base:pull,push", ("pull",)),
        ("", "repository:public/base:pull", ("pull",)),
        ("", "repository:alice/app:pull", ()),
    ],
)
def test_documented_examples(account: str, scope: str, expected: tuple[str, ...]) -> None:
    assert grant(DOC_ACL, account, scope) == expected


def test_first_match_wins_and_empty_actions_deny() -> None:
    acl = acl_of(
        [
            {"match": {"name": "secret/*"}, "actions": []},
            {"match": {}, "actions": ["pull"]},
        ]
    )
    assert grant(acl, "alice", "repository:secret/x:pull") == ()
    assert grant(acl, "alice", "repository:open/x:pull,push") == ("pull",)
    decision = acl.decide("alice", "s", None, parse_scope("repository:secret/x:pull"))
    assert decision.rule is not None and decision.rule.number == 1


def test_default_deny() -> None:
    acl = acl_of([{"match": {"account": "admin"}, "actions": ["*"]}])
    decision = acl.decide("alice", "s", None, parse_scope("repository:a:pull"))
    assert decision.granted.actions == () and decision.rule is None


def test_regexes_must_match_whole_values() -> None:
    acl = acl_of([{"match": {"name": "/team-[a-z]+/"}, "actions": ["pull"]}])
    assert grant(acl, "u", "repository:team-abc:pull") == ("pull",)
    assert grant(acl, "u", "repository:x/team-abc:pull") == ()
    assert grant(acl, "u", "repository:team-abc/x:pull") == ()


def test_glob_question_mark_and_lists() -> None:
    acl = acl_of([{"match": {"account": ["alice", "bo?"], "name": "lib/*"}, "actions": ["pull"]}])
    assert grant(acl, "bob", "repository:lib/x:pull") == ("pull",)
    assert grant(acl, "alice", "repository:lib/x:pull") == ("pull",)
    assert grant(acl, "bobby", "repository:lib/x:pull") == ()


def test_regex_captures_feed_placeholders() -> None:
    acl = acl_of(
        [
            {
                "match": {"account": "/(?P<team>[a-z]+)-ci/", "name": "${team}/*"},
                "actions": ["pull", "push"],
                "comment": "each team's CI account pushes to the team's namespace",
            }
        ]
    )
    assert grant(acl, "web-ci", "repository:web/app:push") == ("push",)
    assert grant(acl, "web-ci", "repository:db/app:push") == ()
    # The capture may also come from the name and be used in the account.
    acl = acl_of(
        [{"match": {"name": "/(?P<owner>[a-z]+)/.+/", "account": "${owner}"}, "actions": ["*"]}]
    )
    assert grant(acl, "carol", "repository:carol/x:push") == ("push",)
    assert grant(acl, "dave", "repository:carol/x:push") == ()


def test_placeholder_values_match_literally() -> None:
    acl = acl_of([{"match": {"name": "${account}/*"}, "actions": ["*"]}])
    assert grant(acl, "a.b", "repository:a.b/x:pull") == ("pull",)
    assert grant(acl, "a.b", "repository:axb/x:pull") == ()  # "." is not a wildcard
    assert grant(acl, "*", "repository:alice/x:pull") == ()  # nor is "*"
    assert grant(acl, "", "repository:x:pull") == ()  # anonymous never fills ${account}


def test_service_type_and_ip() -> None:
    acl = acl_of(
        [
            {"match": {"service": "staging.*", "ip": ["10.0.0.0/8", "::1"]}, "actions": ["*"]},
            {"match": {"type": "registry"}, "actions": ["*"]},
        ]
    )
    assert grant(acl, "u", "repository:x:push", "staging.example", "10.1.2.3") == ("push",)
    assert grant(acl, "u", "repository:x:push", "staging.example", "::1") == ("push",)
    assert grant(acl, "u", "repository:x:push", "staging.example", "192.168.1.1") == ()
    assert grant(acl, "u", "repository:x:push", "prod.example", "10.1.2.3") == ()
    assert grant(acl, "u", "repository:x:push", "staging.example", None) == ()
    assert grant(acl, "u", "registry:catalog:*") == ("*",)


def test_decisions_are_remembered_per_input_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated question is answered without matching rules again; any input that
    differs (account, service, address, scope, groups) is decided afresh; and however many
    different questions clients ask, the memory holds at most DECISIONS_KEPT."""
    acl = acl_of(
        [
            {"match": {"group": "ops"}, "actions": ["*"]},
            {"match": {"ip": "10.0.0.0/8", "name": "${account}/*"}, "actions": ["pull"]},
        ]
    )
    matched: list[int] = []
    for rule in acl.rules:
        original = rule.matches_any_group

        def counting(*args: Any, _original: Any = original, _number: int = rule.number) -> bool:
            matched.append(_number)
            return bool(_original(*args))

        object.__setattr__(rule, "matches_any_group", counting)  # frozen dataclass
    scope = parse_scope("repository:alice/app:pull,push")
    inside = ipaddress.ip_address("10.1.2.3")
    assert acl.decide("alice", "s", inside, scope).granted.actions == ("pull",)
    asked = len(matched)
    assert acl.decide("alice", "s", inside, scope).granted.actions == ("pull",)
    assert len(matched) == asked  # remembered
    outside = ipaddress.ip_address("192.168.0.1")
    assert acl.decide("alice", "s", outside, scope).granted.actions == ()
    assert acl.decide("bob", "s", inside, scope).granted.actions == ()
    assert acl.decide("alice", "s", inside, scope, ["ops"]).granted.actions == ("pull", "push")
    other = parse_scope("repository:alice/app:delete")
    assert acl.decide("alice", "s", inside, other).granted.actions == ()
    monkeypatch.setattr("tokenauth.acl.DECISIONS_KEPT", 10)
    for index in range(100):
        acl.decide(f"user{index}", "s", inside, scope)
    assert len(acl._decisions) <= 10


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"match": {"name": "/(unclosed/"}, "actions": []}],
            "rule 1: match.name: invalid regular",
        ),
        ([{"match": {"nam": "x"}, "actions": []}], "rule 1: unknown match field"),
        ([{"match": {}}], "rule 1: 'actions' is required"),
        ([{"match": {}, "actions": "pull"}], "rule 1: 'actions' must be a list"),
        ([{"match": {}, "actions": ["PULL"]}], "rule 1: 'actions' must be"),
        ([{"match": {"ip": "10.0.0.0/33"}, "actions": []}], "rule 1: match.ip"),
        ([{"match": {"name": "${team}/*"}, "actions": []}], "unknown or circular placeholder"),
        ([{"match": {"account": "/(?P<name>.*)/"}, "actions": []}], "reserved"),
        ([{"match": {"account": 5}, "actions": []}], "match.account must be"),
        ([{"match": {}, "actions": [], "extra": 1}], "unknown key"),
        (
            [{"match": {}, "actions": []}, {"match": {"x": 1}, "actions": [], "comment": "bad"}],
            "rule 2 (bad): unknown match field",
        ),
    ],
)
def test_invalid_rules_are_named(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(AclError) as raised:
        acl_of(rules)
    assert message in str(raised.value)


def test_file_shape_errors() -> None:
    documents: list[Any] = [[], {"rules": []}, {"acl": "x"}]
    for document in documents:
        with pytest.raises(AclError):
            parse_acl(document)
    assert parse_acl({"acl": None}).rules == ()


async def test_acl_reloads_while_serving(
    client: TokenClient, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    _, body, _ = await fetch_token(client, "repository:shared/x:push", auth=("bob", "bob-pw"))
    assert granted(setup, body) == {}
    setup.acl_file.write_text(ACL + '  - match: {name: "shared/*"}\n    actions: [pull, push]\n')
    _, body, _ = await fetch_token(client, "repository:shared/x:push", auth=("bob", "bob-pw"))
    assert granted(setup, body) == {"repository:shared/x": ("push",)}
    # A broken edit is refused, naming the rule; the previous ACL stays in force.
    with caplog.at_level(logging.ERROR, logger="tokenauth.acl"):
        setup.acl_file.write_text(ACL + "  - match: {name: '/(oops/'}\n    actions: []\n")
        status, body, _ = await fetch_token(
            client, "repository:shared/x:push", auth=("bob", "bob-pw")
        )
    assert status == 200 and granted(setup, body) == {"repository:shared/x": ("push",)}
    assert "rule 5" in caplog.text and "previous one stays in force" in caplog.text


def test_invalid_acl_stops_start_up(setup: Setup) -> None:
    setup.acl_file.write_text("acl:\n  - match: {account: admin}\n    comment: no actions\n")
    with pytest.raises(ConfigError, match=r"rule 1 \(no actions\): 'actions' is required"):
        create_app(load_config(setup.config, {}))


async def test_missing_acl_file_keeps_the_last_one(
    setup: Setup, make_client: ClientFactory
) -> None:
    client = await make_client()
    os.unlink(setup.acl_file)
    _, body, _ = await fetch_token(client, "repository:alice/x:push", auth=("alice", "alice-pw"))
    assert granted(setup, body) == {"repository:alice/x": ("push",)}


def test_acl_file_object(setup: Setup) -> None:
    acl = AclFile(setup.acl_file)
    assert len(acl.current().rules) == 4
    assert acl.current().decide("", "s", None, Scope.of("repository", "public/a", ["pull"]))
