"""The segment rule language: the issue's examples parse to the expected trees, every bad
part is named by its dotted path, the first segment form converts, and no JSON document
makes :func:`parse` fail with anything but :class:`SegmentError`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.member_retargeting.model.rfm import GROUPS
from services.member_retargeting.model.segments import (
    ATTRIBUTES,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_NODES,
    MAX_VALUES,
    MAX_WINDOW_DAYS,
    OPS,
    ROOT,
    All,
    AnyOf,
    Attribute,
    Did,
    Not,
    SegmentError,
    is_legacy,
    legacy,
    parse,
)
from shared.events import STAGES


def problems_of(document: Any) -> dict[str, list[str]]:
    with pytest.raises(SegmentError) as caught:
        parse(document)
    problems = caught.value.problems
    assert problems, "a SegmentError names at least one problem"
    return problems


def only_path(document: Any) -> str:
    """The single path a bad rule's problems name."""
    problems = problems_of(document)
    assert len(problems) == 1, problems
    return next(iter(problems))


# ------------------------------------------------------------------ the examples


def test_product_added_in_last_3_days_and_no_order_completed() -> None:
    rule = parse(
        {
            "all": [
                {"event": "Product Added", "within_days": 3},
                {"not": {"event": "Order Completed", "within_days": 3}},
            ]
        }
    )
    assert rule == All(
        (
            Did("Product Added", within_days=3),
            Not(Did("Order Completed", within_days=3)),
        )
    )


def test_gold_tier_and_no_purchase_in_90_days() -> None:
    rule = parse(
        {
            "all": [
                {"attribute": "tier", "op": "eq", "value": "gold"},
                {"attribute": "days_since_last_order", "op": "gte", "value": 90},
            ]
        }
    )
    assert rule == All(
        (
            Attribute("tier", "eq", "gold"),
            Attribute("days_since_last_order", "gte", 90),
        )
    )


def test_mql_stage_and_pricing_intent() -> None:
    rule = parse(
        {
            "all": [
                {"attribute": "stage", "op": "eq", "value": "mql"},
                {"attribute": "intent:pricing", "op": "gt", "value": 0},
            ]
        }
    )
    assert rule == All(
        (
            Attribute("stage", "eq", "mql"),
            Attribute("intent:pricing", "gt", 0),
        )
    )


def test_bought_category_x_never_y() -> None:
    rule = parse(
        {
            "all": [
                {"event": "Order Completed", "category": "X"},
                {"not": {"event": "Order Completed", "category": "Y"}},
            ]
        }
    )
    assert rule == All(
        (
            Did("Order Completed", within_days=None, category="X"),
            Not(Did("Order Completed", category="Y")),
        )
    )


def test_event_defaults_ever_at_least_once() -> None:
    rule = parse({"event": "Product Viewed"})
    assert rule == Did("Product Viewed", within_days=None, count_gte=1)
    assert isinstance(rule, Did)
    assert rule.category is None
    assert rule.product_id is None


def test_event_with_every_key() -> None:
    rule = parse(
        {
            "event": "Product Added",
            "within_days": MAX_WINDOW_DAYS,
            "count_gte": 10_000,
            "category": "shoes",
            "product_id": "sku-1",
        }
    )
    assert rule == Did("Product Added", MAX_WINDOW_DAYS, 10_000, "shoes", "sku-1")


def test_any_and_nested_combinators() -> None:
    rule = parse(
        {
            "any": [
                {"attribute": "rfm_group", "op": "in", "value": ["Champions", "Loyal"]},
                {"not": {"all": []}},
                {"attribute": "is_member", "op": "eq", "value": True},
            ]
        }
    )
    assert rule == AnyOf(
        (
            Attribute("rfm_group", "in", ("Champions", "Loyal")),
            Not(All(())),
            Attribute("is_member", "eq", True),
        )
    )


def test_empty_all_is_everyone() -> None:
    assert parse({"all": []}) == All(())


def test_in_values_become_a_tuple() -> None:
    rule = parse({"attribute": "country", "op": "not_in", "value": ["US", "CA"]})
    assert rule == Attribute("country", "not_in", ("US", "CA"))
    assert isinstance(rule, Attribute)
    assert isinstance(rule.value, tuple)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_allowed(stage: str) -> None:
    assert parse({"attribute": "stage", "op": "eq", "value": stage}) == Attribute(
        "stage", "eq", stage
    )


@pytest.mark.parametrize("group", GROUPS)
def test_every_rfm_group_is_allowed(group: str) -> None:
    assert parse({"attribute": "rfm_group", "op": "ne", "value": group}) == Attribute(
        "rfm_group", "ne", group
    )


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_every_attribute_accepts_each_op_of_its_type(name: str) -> None:
    kind, allowed = ATTRIBUTES[name]
    if allowed is not None:
        sample: Any = allowed[0]
    else:
        sample = {"number": 3, "text": "gold", "flag": True}[kind]
    for op in OPS[kind]:
        value = [sample] if op in ("in", "not_in") else sample
        expected = tuple(value) if isinstance(value, list) else value
        assert parse({"attribute": name, "op": op, "value": value}) == Attribute(name, op, expected)


def test_numbers_may_be_floats() -> None:
    assert parse({"attribute": "revenue", "op": "gte", "value": 99.5}) == Attribute(
        "revenue", "gte", 99.5
    )


def test_intent_topic_is_numeric() -> None:
    assert only_path({"attribute": "intent:pricing", "op": "eq", "value": "high"}) == "value"
    assert only_path({"attribute": "intent:pricing", "op": "in", "value": ["a"]}) == "value"


# ------------------------------------------------------------------------- bad parts


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        # unknown attribute, or not a text
        ({"attribute": "shoe_size", "op": "eq", "value": 9}, "attribute", "intent:<topic>"),
        ({"attribute": 7, "op": "eq", "value": 9}, "attribute", "must be a text"),
        ({"attribute": "intent:", "op": "gt", "value": 1}, "attribute", "intent:<topic>"),
        (
            {"attribute": "intent:" + "t" * 101, "op": "gt", "value": 1},
            "attribute",
            "intent:<topic>",
        ),
        ({"attribute": "Stage", "op": "eq", "value": "mql"}, "attribute", "intent:<topic>"),
        # bad op for the type
        ({"attribute": "tier", "op": "gt", "value": "gold"}, "op", "for tier"),
        ({"attribute": "is_member", "op": "ne", "value": True}, "op", "for is_member"),
        ({"attribute": "has_email", "op": "in", "value": [True]}, "op", "for has_email"),
        ({"attribute": "score", "op": "between", "value": 1}, "op", "for score"),
        ({"attribute": "score", "value": 1}, "op", "for score"),
        ({"attribute": "score", "op": ["eq"], "value": 1}, "op", "for score"),
        # bad value type
        ({"attribute": "score", "op": "gt", "value": "50"}, "value", "finite number"),
        ({"attribute": "score", "op": "gt", "value": True}, "value", "finite number"),
        ({"attribute": "score", "op": "gt"}, "value", "finite number"),
        ({"attribute": "orders", "op": "in", "value": [1, "2"]}, "value", "finite number"),
        ({"attribute": "is_member", "op": "eq", "value": 1}, "value", "true or false"),
        ({"attribute": "is_member", "op": "eq", "value": "true"}, "value", "true or false"),
        ({"attribute": "tier", "op": "eq", "value": 3}, "value", "1 to 200 characters"),
        ({"attribute": "tier", "op": "eq", "value": ""}, "value", "1 to 200 characters"),
        ({"attribute": "tier", "op": "eq", "value": "g" * 201}, "value", "1 to 200 characters"),
        # value not in the allowed set
        ({"attribute": "stage", "op": "eq", "value": "MQL"}, "value", "'mql'"),
        ({"attribute": "stage", "op": "in", "value": ["lead", "prospect"]}, "value", "'lead'"),
        ({"attribute": "rfm_group", "op": "eq", "value": "champions"}, "value", "'Champions'"),
        ({"attribute": "rfm_group", "op": "not_in", "value": ["Whales"]}, "value", "'Lost'"),
        # in / not_in lists
        ({"attribute": "score", "op": "in", "value": []}, "value", f"1 to {MAX_VALUES}"),
        ({"attribute": "score", "op": "in", "value": 5}, "value", f"1 to {MAX_VALUES}"),
        (
            {"attribute": "tier", "op": "not_in", "value": [f"t{i}" for i in range(101)]},
            "value",
            f"1 to {MAX_VALUES}",
        ),
        # events
        ({"event": ""}, "event", "1 to 200"),
        ({"event": 5}, "event", "1 to 200"),
        ({"event": "e" * 201}, "event", "1 to 200"),
        ({"event": "Order Completed", "within_days": 0}, "within_days", "1 to 3650"),
        ({"event": "Order Completed", "within_days": -3}, "within_days", "1 to 3650"),
        ({"event": "Order Completed", "within_days": 3651}, "within_days", "1 to 3650"),
        ({"event": "Order Completed", "within_days": 2.5}, "within_days", "whole number"),
        ({"event": "Order Completed", "within_days": 3.0}, "within_days", "whole number"),
        ({"event": "Order Completed", "within_days": True}, "within_days", "whole number"),
        ({"event": "Order Completed", "within_days": "3"}, "within_days", "whole number"),
        ({"event": "Order Completed", "count_gte": 0}, "count_gte", "1 to 10000"),
        ({"event": "Order Completed", "count_gte": 10_001}, "count_gte", "1 to 10000"),
        ({"event": "Order Completed", "count_gte": True}, "count_gte", "whole number"),
        ({"event": "Order Completed", "count_gte": None}, "count_gte", "whole number"),
        ({"event": "Order Completed", "count_gte": 1.5}, "count_gte", "whole number"),
        ({"event": "Order Completed", "category": ""}, "category", "1 to 200"),
        ({"event": "Order Completed", "category": ["X"]}, "category", "1 to 200"),
        ({"event": "Order Completed", "product_id": 42}, "product_id", "1 to 200"),
        ({"event": "Order Completed", "product_id": "p" * 201}, "product_id", "1 to 200"),
    ],
)
def test_bad_part_is_named(document: dict[str, Any], path: str, fragment: str) -> None:
    problems = problems_of(document)
    assert list(problems) == [path]
    assert len(problems[path]) == 1
    assert fragment in problems[path][0]


def test_bad_part_is_named_by_its_full_path() -> None:
    document = {
        "all": [
            {"event": "Product Added"},
            {"any": [{"event": "x"}, {"not": {"attribute": "tier", "op": "gte", "value": "a"}}]},
        ]
    }
    assert only_path(document) == "all.1.any.1.not.op"


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        ({"attribute": "score", "op": "gt", "value": 1, "extra": 2}, ROOT, "['extra']"),
        ({"event": "X", "within": 3, "days": 1}, ROOT, "['days', 'within']"),
        # an attribute is read as one; the event key is then unknown to it
        ({"event": "X", "attribute": "score"}, ROOT, "['event']"),
        ({"all": [], "name": "x"}, ROOT, "'all' stands alone"),
        ({"any": [{"event": "X"}], "all": []}, ROOT, "'all' stands alone"),
        ({"not": {"event": "X"}, "event": "Y"}, ROOT, "'not' stands alone"),
        ({"any": []}, "any", "not empty"),
        ({"any": {"event": "X"}}, "any", "must be a list"),
        ({"all": "everyone"}, "all", "must be a list"),
        ({"all": None}, "all", "must be a list"),
        ({}, ROOT, "must be all, any, not, an attribute or an event"),
        ({"when": "now"}, ROOT, "must be all, any, not, an attribute or an event"),
        ([], ROOT, "must be an object"),
        ("all", ROOT, "must be an object"),
        (None, ROOT, "must be an object"),
        (3, ROOT, "must be an object"),
        ({"all": [1]}, "all.0", "must be an object"),
        ({"not": None}, "not", "must be an object"),
        ({"not": [{"event": "X"}]}, "not", "must be an object"),
    ],
)
def test_bad_shape_is_named(document: Any, path: str, fragment: str) -> None:
    problems = problems_of(document)
    assert list(problems) == [path]
    assert fragment in " ".join(problems[path])


def test_root_problems_use_the_root_name() -> None:
    assert ROOT == "rule"
    assert only_path(42) == "rule"


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(SegmentError) as caught:
        parse({"all": [{"event": ""}, 5]})
    message = str(caught.value)
    assert "all.0.event: an event name of 1 to 200 characters" in message
    assert "all.1: must be an object" in message
    assert isinstance(caught.value, ValueError)


# ---------------------------------------------------------------------------- bounds


def nested_not(levels: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"event": "Order Completed"}
    for _ in range(levels):
        rule = {"not": rule}
    return rule


def test_nesting_up_to_max_depth_is_fine() -> None:
    rule = parse(nested_not(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        assert isinstance(rule, Not)
        rule = rule.rule
    assert rule == Did("Order Completed")


def test_nesting_deeper_than_max_depth_is_named() -> None:
    problems = problems_of(nested_not(MAX_DEPTH + 1))
    path = ".".join(["not"] * (MAX_DEPTH + 1))
    assert problems == {path: [f"nests deeper than {MAX_DEPTH} levels"]}


def test_deep_nesting_through_lists_is_bounded() -> None:
    rule: Any = {"event": "X"}
    for _ in range(MAX_DEPTH + 1):
        rule = {"all": [rule]}
    problems = problems_of(rule)
    path = ".".join(["all.0"] * (MAX_DEPTH + 1))
    assert problems == {path: [f"nests deeper than {MAX_DEPTH} levels"]}


def test_very_deep_document_is_refused_not_recursed() -> None:
    problems = problems_of(nested_not(5000))
    assert list(problems) == [".".join(["not"] * (MAX_DEPTH + 1))]


def test_max_nodes_parts_are_fine() -> None:
    # the "all" itself is one part
    rule = parse({"all": [{"event": f"e{i}"} for i in range(MAX_NODES - 1)]})
    assert isinstance(rule, All)
    assert len(rule.rules) == MAX_NODES - 1


def test_one_part_too_many_is_named() -> None:
    problems = problems_of({"all": [{"event": f"e{i}"} for i in range(MAX_NODES)]})
    assert problems == {f"all.{MAX_NODES - 1}": [f"a rule has at most {MAX_NODES} parts"]}


def test_parts_are_counted_across_nesting() -> None:
    # 1 "all" + 25 x ("not" + event) = 51 parts: the last event is one too many.
    problems = problems_of({"all": [{"not": {"event": "X"}} for _ in range(25)]})
    assert problems == {"all.24.not": [f"a rule has at most {MAX_NODES} parts"]}


def test_max_values_listed_is_fine() -> None:
    rule = parse({"attribute": "score", "op": "in", "value": list(range(MAX_VALUES))})
    assert rule == Attribute("score", "in", tuple(range(MAX_VALUES)))


def test_long_texts_at_the_limit_are_fine() -> None:
    rule = parse(
        {
            "all": [
                {"event": "e" * 200, "category": "c" * 200, "product_id": "p" * 200},
                {"attribute": "tier", "op": "eq", "value": "t" * 200},
                {"attribute": "intent:" + "t" * 100, "op": "gte", "value": 1},
            ]
        }
    )
    assert isinstance(rule, All)
    assert len(rule.rules) == 3


# --------------------------------------------------------------- several problems at once


def test_every_bad_sibling_is_reported() -> None:
    problems = problems_of(
        {
            "all": [
                {"attribute": "shoe_size", "op": "eq", "value": 9},
                {"event": "Product Added", "within_days": 0},
                {"event": "Product Added"},
                {"any": []},
                {"not": {"attribute": "stage", "op": "eq", "value": "MQL"}},
                "gold",
            ]
        }
    )
    assert set(problems) == {
        "all.0.attribute",
        "all.1.within_days",
        "all.3.any",
        "all.4.not.value",
        "all.5",
    }


def test_problems_in_different_branches_are_all_reported() -> None:
    problems = problems_of(
        {
            "any": [
                {"all": [{"event": "A", "count_gte": 0}]},
                {"all": [{"event": "B"}, {"attribute": "score", "op": "gt", "value": "x"}]},
            ]
        }
    )
    assert set(problems) == {"any.0.all.0.count_gte", "any.1.all.1.value"}


# ------------------------------------------------ scalar ops take one value, not a list


@pytest.mark.parametrize(
    "document",
    [
        # A one-element list for a flag: the SQL compiler tests the truth of the tuple
        # (False,), which is true, so "has_email eq [false]" would select people WITH e-mail.
        {"attribute": "has_email", "op": "eq", "value": [False]},
        {"attribute": "is_member", "op": "eq", "value": []},
        {"attribute": "score", "op": "gt", "value": []},
        {"attribute": "score", "op": "eq", "value": [1, 2]},
        {"attribute": "tier", "op": "ne", "value": ["gold"]},
        # An empty list skips the allowed-values check altogether.
        {"attribute": "stage", "op": "eq", "value": []},
    ],
)
def test_scalar_op_refuses_a_list_value(document: dict[str, Any]) -> None:
    assert only_path(document) == "value"


# --------------------------------------------------------------------------- legacy form


def test_legacy_form_converts_every_part() -> None:
    document = {"members": True, "stages": ["mql", "sql"], "min_score": 50}
    assert is_legacy(document)
    converted = legacy(document)
    assert converted == {
        "all": [
            {"attribute": "is_member", "op": "eq", "value": True},
            {"attribute": "stage", "op": "in", "value": ["mql", "sql"]},
            {"attribute": "score", "op": "gte", "value": 50},
        ]
    }
    assert parse(converted) == All(
        (
            Attribute("is_member", "eq", True),
            Attribute("stage", "in", ("mql", "sql")),
            Attribute("score", "gte", 50),
        )
    )


def test_legacy_members_false_means_non_members() -> None:
    assert legacy({"members": False}) == {
        "all": [{"attribute": "is_member", "op": "eq", "value": False}]
    }


def test_legacy_members_is_made_a_flag() -> None:
    assert legacy({"members": 1})["all"] == [{"attribute": "is_member", "op": "eq", "value": True}]


def test_legacy_omitted_or_empty_parts_are_left_out() -> None:
    assert legacy({"members": None, "stages": [], "min_score": None}) == {"all": []}
    assert legacy({"min_score": 0}) == {"all": [{"attribute": "score", "op": "gte", "value": 0}]}
    assert parse(legacy({"stages": []})) == All(())


def test_legacy_stages_tuple_becomes_a_list() -> None:
    converted = legacy({"stages": ("lead",)})
    assert converted["all"][0]["value"] == ["lead"]


def test_legacy_bad_values_fail_when_parsed() -> None:
    problems = problems_of(legacy({"stages": ["prospect"], "min_score": "high"}))
    assert set(problems) == {"all.0.value", "all.1.value"}


@pytest.mark.parametrize(
    "document",
    [
        {"members": True},
        {"stages": ["lead"]},
        {"min_score": 10},
        {"members": None, "stages": None, "min_score": None},
    ],
)
def test_is_legacy(document: dict[str, Any]) -> None:
    assert is_legacy(document)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"all": []},
        {"members": True, "all": []},
        {"attribute": "score", "op": "gt", "value": 1},
        [],
        ["members"],
        "members",
        None,
    ],
)
def test_is_not_legacy(document: Any) -> None:
    assert not is_legacy(document)


# ------------------------------------------------------------------- any JSON whatsoever

_KEYS = st.sampled_from(
    [
        "all",
        "any",
        "not",
        "attribute",
        "op",
        "value",
        "event",
        "within_days",
        "count_gte",
        "category",
        "product_id",
        "members",
        "stages",
        "min_score",
    ]
) | st.text(max_size=8)
_WORDS = st.sampled_from(
    [
        *ATTRIBUTES,
        "intent:pricing",
        "intent:",
        *sorted({op for ops in OPS.values() for op in ops}),
        *STAGES,
        *GROUPS,
        "Order Completed",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | _WORDS
)
JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=60,
)
# Documents shaped like rules, so that many parse and the rest fail deep inside.
_VALUES = _SCALARS | st.lists(_SCALARS, max_size=4)
_LEAVES = st.fixed_dictionaries(
    {"attribute": _WORDS, "op": _WORDS | _SCALARS},
    optional={"value": _VALUES, "extra": _SCALARS},
) | st.fixed_dictionaries(
    {"event": st.sampled_from(["Product Added", "Order Completed", ""]) | _SCALARS},
    optional={
        "within_days": st.integers(min_value=-2, max_value=4000) | _SCALARS,
        "count_gte": st.integers(min_value=-2, max_value=10_002) | _SCALARS,
        "category": _SCALARS,
        "product_id": _SCALARS,
    },
)
RULE_LIKE = st.recursive(
    _LEAVES | JSON,
    lambda children: (
        st.builds(lambda rules: {"all": rules}, st.lists(children, max_size=6))
        | st.builds(lambda rules: {"any": rules}, st.lists(children, max_size=6))
        | st.builds(lambda rule: {"not": rule}, children)
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_parses_or_raises_segment_error(document: Any) -> None:
    assert_parses_or_names_problems(document)


@settings(max_examples=200, deadline=None)
@given(RULE_LIKE)
def test_any_rule_like_json_parses_or_raises_segment_error(document: Any) -> None:
    assert_parses_or_names_problems(document)


def assert_parses_or_names_problems(document: Any) -> None:
    try:
        rule = parse(document)
    except SegmentError as exc:
        assert exc.problems
        assert all(isinstance(k, str) and k for k in exc.problems)
        assert all(messages for messages in exc.problems.values())
    else:
        assert isinstance(rule, All | AnyOf | Not | Attribute | Did)


# Regression (review finding 7): each of these parsed, then failed in the database (or in
# Python building the query) with a 500: numbers beyond what a column or a date can take,
# texts PostgreSQL cannot hold.
@pytest.mark.parametrize(
    ("rule", "path", "says"),
    [
        ({"attribute": "days_since_last_order", "op": "gte", "value": 10**7}, "value", "days"),
        ({"attribute": "days_since_last_order", "op": "lt", "value": 1e300}, "value", "days"),
        ({"attribute": "days_since_last_order", "op": "gt", "value": -1}, "value", "days"),
        (
            {"attribute": "days_since_last_order", "op": "in", "value": [1, MAX_DAYS + 1]},
            "value",
            "days",
        ),
        ({"attribute": "score", "op": "gt", "value": 10**30}, "value", "64 bits"),
        ({"attribute": "revenue", "op": "gt", "value": -(10**30)}, "value", "64 bits"),
        ({"attribute": "orders", "op": "in", "value": [1, 2**63]}, "value", "64 bits"),
        ({"attribute": "tier", "op": "eq", "value": "a\u0000b"}, "value", "control"),
        ({"attribute": "tier", "op": "in", "value": ["ok", "a\ud800b"]}, "value", "surrogate"),
        ({"attribute": "country", "op": "eq", "value": "t\nw"}, "value", "control"),
        ({"attribute": "intent:a\u0000", "op": "gt", "value": 1}, "attribute", "control"),
        ({"event": "x\u0000"}, "event", "control"),
        ({"event": "x\udfff"}, "event", "surrogate"),
        ({"event": "Product Added", "category": "c\u0000"}, "category", "control"),
        ({"event": "Product Added", "product_id": "\ud800"}, "product_id", "surrogate"),
    ],
)
def test_values_no_database_can_take_are_refused(
    rule: dict[str, Any], path: str, says: str
) -> None:
    problems = problems_of({"all": [rule]})
    assert list(problems) == [f"all.0.{path}"], problems
    assert says in " ".join(problems[f"all.0.{path}"])


@pytest.mark.parametrize(
    "rule",
    [
        {"attribute": "days_since_last_order", "op": "gte", "value": MAX_DAYS},
        {"attribute": "days_since_last_order", "op": "lt", "value": 0},
        {"attribute": "score", "op": "gt", "value": 2**63 - 1},
        {"attribute": "score", "op": "gt", "value": -(2**63)},
        {"attribute": "revenue", "op": "lt", "value": 1.5e308},  # finite floats compare
        {"attribute": "tier", "op": "eq", "value": "g\u00f6ld ✓"},
        {"attribute": 'intent:a"b.$', "op": "gt", "value": 1},
    ],
)
def test_the_bounds_themselves_are_accepted(rule: dict[str, Any]) -> None:
    parse(rule)
