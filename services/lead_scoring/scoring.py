"""Behaviour scoring: rules are data, evaluation is a pure function.

A rule matches on the event type, optionally the event name (track) and a page path
pattern (page/screen, ``fnmatch`` syntax). ``repeatable=False`` rules award their points
once per lead. Every award names its rule and event, so every point is explained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from shared.events import Envelope


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    points: int
    event_type: str
    event_name: str | None = None
    path_pattern: str | None = None
    repeatable: bool = True

    def matches(self, event: Envelope) -> bool:
        if event.type != self.event_type:
            return False
        if self.event_name is not None and event.payload.get("event") != self.event_name:
            return False
        return self.path_pattern is None or fnmatchcase(page_path(event), self.path_pattern)


@dataclass(frozen=True)
class Award:
    rule_id: str
    points: int
    reason: str
    event_id: str


# Pardot-style defaults: a form is worth far more than a page view; errors cost a little.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("page-view", "Viewed a page", 1, "page"),
    Rule("pricing-page", "Viewed pricing", 10, "page", path_pattern="/pricing*", repeatable=False),
    Rule("identified", "Told us who they are", 5, "identify", repeatable=False),
    Rule("signed-up", "Signed up", 20, "track", event_name="Signed Up", repeatable=False),
    Rule("form-submitted", "Submitted a form", 50, "track", event_name="Form Submitted"),
    Rule("form-error", "Hit a form error", -5, "track", event_name="Form Error"),
    Rule(
        "demo-requested",
        "Requested a demo",
        30,
        "track",
        event_name="Demo Requested",
        repeatable=False,
    ),
    Rule("product-added", "Added a product to the cart", 5, "track", event_name="Product Added"),
)

PURCHASE_EVENT = "Order Completed"


def page_path(event: Envelope) -> str:
    """The path of a page event: ``properties.path``, else ``context.page.path``."""
    path = event.payload.get("properties", {}).get("path")
    if not isinstance(path, str):
        page: Any = event.context.get("page") or {}
        path = page.get("path") if isinstance(page, dict) else None
    return path if isinstance(path, str) else ""


def evaluate(
    rules: Sequence[Rule], event: Envelope, already_awarded: Iterable[str] = ()
) -> list[Award]:
    """The awards ``event`` earns; one-time rules in ``already_awarded`` earn nothing."""
    done = set(already_awarded)
    return [
        Award(rule.id, rule.points, rule.description, event.event_id)
        for rule in rules
        if rule.matches(event) and (rule.repeatable or rule.id not in done)
    ]


def is_purchase(event: Envelope) -> bool:
    return event.type == "track" and event.payload.get("event") == PURCHASE_EVENT
