"""The segment rule language: JSON marketing can write, parsed into a small tree. Pure.

A rule is one of::

    {"all": [rule, ...]}     every one holds (an empty list: everyone)
    {"any": [rule, ...]}     at least one holds
    {"not": rule}            it does not hold
    {"attribute": "tier", "op": "in", "value": ["gold", "silver"]}
    {"event": "Product Added", "within_days": 3, "count_gte": 1,
     "category": "shoes", "product_id": "sku-1"}          # did it (in the window)

Attributes are what a person is now: ``stage``, ``score``, ``is_member``, ``tier``,
``rfm_group``, ``rfm_recency`` / ``rfm_frequency`` / ``rfm_monetary`` (1-5), ``orders``,
``revenue``, ``days_since_last_order``, ``country``, ``has_email``, ``has_phone`` and
``intent:<topic>`` (a lead's points for an intent topic). Events are what a person did:
any tracked event name — Segment's e-commerce spec ones (``Product Viewed``, ``Product
Added``, ``Order Completed`` …) carry products and categories; ``within_days`` omitted
means ever.

So "Product Added in the last 3 days and no Order Completed" is
``{"all": [{"event": "Product Added", "within_days": 3},
{"not": {"event": "Order Completed", "within_days": 3}}]}``; "bought category X, never
Y" is ``{"all": [{"event": "Order Completed", "category": "X"}, {"not": {"event":
"Order Completed", "category": "Y"}}]}``.

:func:`parse` validates a rule and names every bad part by its path (``all.1.op``), so
an HTTP answer can point at it. The rule is compiled to one set-based SQL query by
:mod:`services.member_retargeting.people.segments`; nothing here loops over people.
Bounded: at most :data:`MAX_NODES` parts, :data:`MAX_DEPTH` levels, 100 listed values;
numbers finite and whole ones within 64 bits, ``days_since_last_order`` 0 to
:data:`MAX_DAYS`; texts (values, event names, categories, products, intent topics) free
of NUL, control characters and lone surrogates — so every rule that parses can be run on
every database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.events import STAGES
from shared.limits import MAX_EVENT_NAME_LENGTH, MAX_INTEGER, MIN_INTEGER, text_problem

from .rfm import GROUPS

MAX_NODES = 50
MAX_DEPTH = 8
MAX_VALUES = 100
MAX_WINDOW_DAYS = 3650
MAX_DAYS = 36500  # days since the last order: a hundred years
INTENT_PREFIX = "intent:"
ROOT = "rule"  # the path of the whole rule in :attr:`SegmentError.problems`

NUMBER, TEXT, FLAG = "number", "text", "flag"
# attribute → (type, allowed values or None)
ATTRIBUTES: dict[str, tuple[str, tuple[Any, ...] | None]] = {
    "stage": (TEXT, STAGES),
    "score": (NUMBER, None),
    "is_member": (FLAG, None),
    "tier": (TEXT, None),
    "rfm_group": (TEXT, GROUPS),
    "rfm_recency": (NUMBER, None),
    "rfm_frequency": (NUMBER, None),
    "rfm_monetary": (NUMBER, None),
    "orders": (NUMBER, None),
    "revenue": (NUMBER, None),
    "days_since_last_order": (NUMBER, None),
    "country": (TEXT, None),
    "has_email": (FLAG, None),
    "has_phone": (FLAG, None),
}
OPS = {
    NUMBER: ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"),
    TEXT: ("eq", "ne", "in", "not_in"),
    FLAG: ("eq",),
}


@dataclass(frozen=True)
class All:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    rule: Rule


@dataclass(frozen=True)
class Attribute:
    name: str
    op: str
    value: Any


@dataclass(frozen=True)
class Did:
    event: str
    within_days: int | None = None
    count_gte: int = 1
    category: str | None = None
    product_id: str | None = None


Rule = All | AnyOf | Not | Attribute | Did


class SegmentError(ValueError):
    """A rule that cannot be used; ``problems`` maps each bad part's path to reasons."""

    def __init__(self, problems: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in problems.items()))
        self.problems = problems


def parse(document: Any) -> Rule:
    """The rule ``document`` describes, or :class:`SegmentError` naming every bad part."""
    problems: dict[str, list[str]] = {}
    counter = [0]
    rule = _parse(document, "", 0, problems, counter)
    if problems:
        raise SegmentError(problems)
    assert rule is not None
    return rule


def legacy(document: Mapping[str, Any]) -> dict[str, Any]:
    """The rule of the first segment form (``members``, ``stages``, ``min_score``)."""
    parts: list[dict[str, Any]] = []
    if document.get("members") is not None:
        parts.append({"attribute": "is_member", "op": "eq", "value": bool(document["members"])})
    if document.get("stages"):
        parts.append({"attribute": "stage", "op": "in", "value": list(document["stages"])})
    if document.get("min_score") is not None:
        parts.append({"attribute": "score", "op": "gte", "value": document["min_score"]})
    return {"all": parts}


def is_legacy(document: Any) -> bool:
    return (
        isinstance(document, Mapping)
        and bool(document)
        and (set(document) <= {"members", "stages", "min_score"})
    )


def _at(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _parse(
    node: Any, path: str, depth: int, problems: dict[str, list[str]], counter: list[int]
) -> Rule | None:
    def bad(where: str, message: str) -> None:
        problems.setdefault(where or ROOT, []).append(message)

    counter[0] += 1
    if counter[0] > MAX_NODES:
        bad(path, f"a rule has at most {MAX_NODES} parts")
        return None
    if depth > MAX_DEPTH:
        bad(path, f"nests deeper than {MAX_DEPTH} levels")
        return None
    if not isinstance(node, Mapping):
        bad(path, "must be an object")
        return None
    keys = set(node)
    for combinator in ("all", "any"):
        if combinator in node:
            if keys != {combinator}:
                bad(path, f"'{combinator}' stands alone")
                return None
            items = node[combinator]
            # An empty "all" holds for everyone (a segment of all contacts).
            if not isinstance(items, list) or (combinator == "any" and not items):
                bad(_at(path, combinator), "must be a list of rules (any: not empty)")
                return None
            parsed = [
                _parse(item, _at(_at(path, combinator), i), depth + 1, problems, counter)
                for i, item in enumerate(items)
            ]
            if any(p is None for p in parsed):
                return None
            rules = tuple(p for p in parsed if p is not None)
            return All(rules) if combinator == "all" else AnyOf(rules)
    if "not" in node:
        if keys != {"not"}:
            bad(path, "'not' stands alone")
            return None
        inner = _parse(node["not"], _at(path, "not"), depth + 1, problems, counter)
        return Not(inner) if inner is not None else None
    if "attribute" in node:
        return _attribute(node, path, bad)
    if "event" in node:
        return _did(node, path, bad)
    bad(path, "must be all, any, not, an attribute or an event")
    return None


def _attribute(node: Mapping[str, Any], path: str, bad: Any) -> Attribute | None:
    unknown = set(node) - {"attribute", "op", "value"}
    if unknown:
        bad(path, f"unknown keys {sorted(unknown)}")
        return None
    name = node["attribute"]
    if not isinstance(name, str):
        bad(_at(path, "attribute"), "must be a text")
        return None
    if name.startswith(INTENT_PREFIX) and 0 < len(name) - len(INTENT_PREFIX) <= 100:
        if text_problem(name):
            bad(_at(path, "attribute"), f"the intent topic {text_problem(name)}")
            return None
        kind, allowed = NUMBER, None
    elif name in ATTRIBUTES:
        kind, allowed = ATTRIBUTES[name]
    else:
        bad(_at(path, "attribute"), f"one of {sorted(ATTRIBUTES)} or intent:<topic>")
        return None
    op = node.get("op")
    if op not in OPS[kind]:
        bad(_at(path, "op"), f"for {name}: one of {list(OPS[kind])}")
        return None
    value = node.get("value")
    if op in ("in", "not_in") and (not isinstance(value, list) or not 0 < len(value) <= MAX_VALUES):
        bad(_at(path, "value"), f"a list of 1 to {MAX_VALUES} values")
        return None
    if op not in ("in", "not_in") and isinstance(value, list):
        bad(_at(path, "value"), f"one value for {op!r} (a list needs 'in' or 'not_in')")
        return None
    values: list[Any] = value if isinstance(value, list) else [value]
    for v in values:
        if kind == NUMBER and (problem := _number_problem(name, v)):
            bad(_at(path, "value"), problem)
            return None
        if kind == FLAG and not isinstance(v, bool):
            bad(_at(path, "value"), "must be true or false")
            return None
        if kind == TEXT and (problem := _text_problem(v)):
            bad(_at(path, "value"), problem)
            return None
        if allowed is not None and v not in allowed:
            bad(_at(path, "value"), f"one of {list(allowed)}")
            return None
    return Attribute(name, op, tuple(value) if isinstance(value, list) else value)


def _number_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be compared with the number ``name`` (None: it can)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a finite number"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
        return "must be a whole number within 64 bits"
    if name == "days_since_last_order" and not 0 <= value <= MAX_DAYS:
        return f"a number of days, 0 to {MAX_DAYS}"
    return None


def _text_problem(value: Any, limit: int = 200) -> str | None:
    """Why ``value`` cannot be a text of a rule (None: it can)."""
    if not (isinstance(value, str) and 0 < len(value) <= limit):
        return f"must be a text of 1 to {limit} characters"
    return text_problem(value)


def _did(node: Mapping[str, Any], path: str, bad: Any) -> Did | None:
    unknown = set(node) - {"event", "within_days", "count_gte", "category", "product_id"}
    if unknown:
        bad(path, f"unknown keys {sorted(unknown)}")
        return None
    event = node["event"]
    if not (isinstance(event, str) and 0 < len(event) <= MAX_EVENT_NAME_LENGTH):
        bad(_at(path, "event"), "an event name of 1 to 200 characters")
        return None
    if problem := text_problem(event):
        bad(_at(path, "event"), problem)
        return None
    within = node.get("within_days")
    if within is not None and (
        isinstance(within, bool) or not isinstance(within, int) or not 0 < within <= 3650
    ):
        bad(_at(path, "within_days"), f"a whole number of days, 1 to {MAX_WINDOW_DAYS}")
        return None
    count = node.get("count_gte", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
        bad(_at(path, "count_gte"), "a whole number, 1 to 10000")
        return None
    texts = {}
    for key in ("category", "product_id"):
        value = node.get(key)
        if value is not None and (problem := _text_problem(value)):
            bad(_at(path, key), problem)
            return None
        texts[key] = value
    return Did(event, within, count, texts["category"], texts["product_id"])
