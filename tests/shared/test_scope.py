"""The scope grammar: parsing, formatting, merging and intersection."""

from __future__ import annotations

import pytest

from shared.scope import (
    MAX_SCOPES,
    Scope,
    ScopeError,
    format_scopes,
    merge_scopes,
    parse_scope,
    parse_scopes,
)


def test_parse_plain_repository_scope() -> None:
    scope = parse_scope("repository:library/alpine:pull,push")
    assert scope == Scope("repository", "library/alpine", ("pull", "push"))
    assert str(scope) == "repository:library/alpine:pull,push"


def test_action_order_does_not_matter() -> None:
    assert parse_scope("repository:a:push,pull") == parse_scope("repository:a:pull,push")


def test_name_with_host_and_port_splits_at_first_and_last_colon() -> None:
    scope = parse_scope("repository:localhost:5000/team/app:pull")
    assert (scope.type, scope.name, scope.actions) == (
        "repository",
        "localhost:5000/team/app",
        ("pull",),
    )


def test_resource_class_is_kept() -> None:
    scope = parse_scope("repository(plugin):vieux/sshfs:pull")
    assert scope.type == "repository" and scope.resource_class == "plugin"
    assert str(scope) == "repository(plugin):vieux/sshfs:pull"
    assert scope.to_claim() == {
        "type": "repository",
        "name": "vieux/sshfs",
        "class": "plugin",
        "actions": ["pull"],
    }


def test_star_absorbs_other_actions() -> None:
    assert parse_scope("registry:catalog:*").actions == ("*",)
    assert parse_scope("repository:a:pull,*").actions == ("*",)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "repository",
        "repository:name",
        "repository::pull",
        "repository:Upper/Case:pull",
        "repository:a:",
        "repository:a:pull,",
        "repository:a:PULL",
        "Repo:a:pull",
        "repository(:a:pull",
        "repository:a//b:pull",
        "repository:-a:pull",
        "repository:" + "a" * 300 + ":pull",
        "repository:a:" + ",".join(["pull"] * 17),
    ],
)
def test_malformed_scopes_are_refused(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_error_message_names_the_scope() -> None:
    with pytest.raises(ScopeError, match="repository:a:PULL"):
        parse_scope("repository:a:PULL")


def test_parse_scopes_splits_spaces_and_merges_the_same_resource() -> None:
    scopes = parse_scopes(["repository:a:pull repository:b:pull", "repository:a:push"])
    assert scopes == [
        Scope("repository", "a", ("pull", "push")),
        Scope("repository", "b", ("pull",)),
    ]


def test_too_many_scopes_are_refused() -> None:
    with pytest.raises(ScopeError, match="more than"):
        parse_scopes([f"repository:r{i}:pull" for i in range(MAX_SCOPES + 1)])


def test_format_round_trips() -> None:
    text = "repository:a/b:pull,push registry:catalog:*"
    assert format_scopes(parse_scopes([text])) == text


def test_intersection_rules() -> None:
    requested = Scope.of("repository", "a", ["pull", "push"])
    assert requested.intersect(["pull"]).actions == ("pull",)
    assert requested.intersect(["*"]).actions == ("pull", "push")
    assert requested.intersect([]).actions == ()
    everything = Scope.of("repository", "a", ["*"])
    assert everything.intersect(["pull", "delete"]).actions == ("delete", "pull")
    assert everything.intersect(["*"]).actions == ("*",)


def test_allows_and_merge_drops_empty() -> None:
    assert Scope.of("repository", "a", ["*"]).allows("delete")
    assert not Scope.of("repository", "a", ["pull"]).allows("push")
    assert merge_scopes([Scope("repository", "a", ())]) == []


def test_from_claim_validates_shape() -> None:
    good = {"type": "repository", "name": "a", "actions": ["push", "pull"]}
    assert Scope.from_claim(good).actions == ("pull", "push")
    for bad in ({"type": 1, "name": "a"}, {"type": "repository", "name": "a", "actions": "pull"}):
        with pytest.raises(ScopeError):
            Scope.from_claim(bad)
