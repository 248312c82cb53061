"""Behaviour scoring: rules are data, evaluation is a pure function.

A rule matches on the event type, optionally the event name (track), a page path pattern
(page/screen, ``fnmatch`` syntax) and property values (equal, or one of a list).
``repeatable=False`` rules award their points once per lead; repeatable rules may be
capped at ``cap`` awards per ``cap_period_days``. Every award names its rule and event,
so every point is explained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from shared.events import ORDER_COMPLETED, Envelope
from shared.provenance import from_browser


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    points: int
    event_type: str
    event_name: str | None = None
    path_pattern: str | None = None
    repeatable: bool = True
    properties: tuple[tuple[str, Any], ...] = ()
    cap: int | None = None
    cap_period_days: float | None = None

    def matches(self, event: Envelope) -> bool:
        if event.type != self.event_type:
            return False
        if self.event_name is not None and event.payload.get("event") != self.event_name:
            return False
        props = event.payload.get("properties") or {}
        for key, expected in self.properties:
            value = props.get(key)
            if isinstance(expected, list | tuple):
                if value not in expected:
                    return False
            elif value != expected:
                return False
        return self.path_pattern is None or fnmatchcase(page_path(event), self.path_pattern)

    def allows(self, event: Envelope, past: Sequence[datetime]) -> bool:
        """Whether another award fits: once for one-time rules, ``cap`` per period."""
        if not self.repeatable:
            return not past
        if self.cap is None:
            return True
        if self.cap_period_days is None:
            return len(past) < self.cap
        since = event.effective_at - timedelta(days=self.cap_period_days)
        return sum(1 for at in past if at > since) < self.cap


@dataclass(frozen=True)
class Award:
    rule_id: str
    points: int
    reason: str
    event_id: str


# Pardot-style defaults: a form is worth far more than a page view; errors cost a little.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("page-view", "Viewed a page", 1, "page"),
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
    Rule(
        "product-added",
        "Added a product to the cart",
        5,
        "track",
        event_name="Product Added",
        cap=3,
        cap_period_days=1,
    ),
    Rule(
        "enterprise-trial",
        "Started an enterprise trial",
        25,
        "track",
        event_name="Trial Started",
        properties=(("plan", ("enterprise", "business")),),
        repeatable=False,
    ),
)


def page_path(event: Envelope) -> str:
    """The path of a page event: ``properties.path``, else ``context.page.path``."""
    path = event.payload.get("properties", {}).get("path")
    if not isinstance(path, str):
        page: Any = event.context.get("page") or {}
        path = page.get("path") if isinstance(page, dict) else None
    return path if isinstance(path, str) else ""


def evaluate(
    rules: Sequence[Rule],
    event: Envelope,
    past_awards: Mapping[str, Sequence[datetime]] | Iterable[str] = (),
) -> list[Award]:
    """The awards ``event`` earns. ``past_awards``: rule id → times it awarded this lead
    (or just the rule ids, when no rule has a period cap)."""
    history: Mapping[str, Sequence[datetime]] = (
        past_awards
        if isinstance(past_awards, Mapping)
        else {rule_id: [datetime.min.replace(tzinfo=UTC)] for rule_id in past_awards}
    )
    return [
        Award(rule.id, rule.points, rule.description, event.event_id)
        for rule in rules
        if rule.matches(event) and rule.allows(event, history.get(rule.id, ()))
    ]


def is_purchase(event: Envelope) -> bool:
    """An order that makes its person a customer: from a server source only (a browser's
    public key could make anyone a customer, :mod:`shared.provenance`)."""
    return (
        event.type == "track"
        and event.payload.get("event") == ORDER_COMPLETED
        and not from_browser(event.context)
    )
