"""HTTP plumbing: field errors named with dots, role tokens compared exactly."""

from __future__ import annotations

from shared.http import flatten_field_errors, role_for_token


def test_flatten_names_nested_fields_with_dots() -> None:
    tree = {"message": {"subject": ["Missing data."]}, "batch": {0: {"event": ["bad"]}}}
    assert flatten_field_errors(tree) == {
        "message.subject": ["Missing data."],
        "batch.0.event": ["bad"],
    }


def test_role_for_token_matches_exactly_and_ignores_empty_roles() -> None:
    tokens = {"sales": "s-token", "marketing": "m-token", "admin": ""}
    assert role_for_token("s-token", tokens) == "sales"
    assert role_for_token("m-token", tokens) == "marketing"
    assert role_for_token("", tokens) is None
    assert role_for_token("s-toke", tokens) is None
