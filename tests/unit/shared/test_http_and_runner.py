from __future__ import annotations

import pytest

from shared.deadletter import DeadLetter, parse_headers, replay_target
from shared.http import flatten_field_errors, role_for_token
from shared.runner import DeadLetterLimit, DeadLetterLimitExceeded


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


def test_dead_letter_limit_trips_only_on_a_bad_majority() -> None:
    limit = DeadLetterLimit(max_ratio=0.5, window=100, min_invalid=10)
    limit.check([True] * 9 + [False] * 91)  # a few bad messages: keep going
    limit.check([True] * 40)
    with pytest.raises(DeadLetterLimitExceeded):
        limit.check([True] * 30)


def test_dead_letter_headers_round_trip() -> None:
    letter = DeadLetter("funnel.traffic", 3, 42, b"k", b"v", "lead-scoring", "bad_json", "why")
    info = parse_headers([*letter.headers(), ("other", b"x")])
    assert info["source"] == "funnel.traffic"
    assert (info["partition"], info["offset"]) == ("3", "42")
    assert (info["consumer"], info["kind"], info["reason"]) == ("lead-scoring", "bad_json", "why")
    assert replay_target(info) == "funnel.traffic"
    assert replay_target({"source": "http:/v1/batch"}) is None
