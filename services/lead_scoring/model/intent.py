"""Intent: what a lead is researching, from keyword match to intent match. Pure.

Page titles, paths and on-site search terms are matched against a taxonomy of topics,
each with keywords and a weight. A matching event earns the topic's weight as points with
the rule id ``intent:<topic>`` (:func:`intent_rule_id`) — explained like every other
point — at most ``daily_cap`` times a day per topic, so reloading a page is not "intent".
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from services.lead_scoring.model.rules import Award, Rule, page_path
from shared.events import Envelope

SEARCH_EVENTS = frozenset({"Products Searched", "Searched", "Site Searched"})
INTENT_PREFIX = "intent:"


def intent_rule_id(topic_id: str) -> str:
    """The rule id under which a topic's points are awarded and explained."""
    return f"{INTENT_PREFIX}{topic_id}"


def intent_topic(rule_id: str) -> str | None:
    """The topic an award's rule id stands for, or None for a behaviour rule."""
    return rule_id.removeprefix(INTENT_PREFIX) if rule_id.startswith(INTENT_PREFIX) else None


def with_intent(intent: Mapping[str, int], awards: Iterable[Award]) -> dict[str, int]:
    """A lead's intent (topic → points) after ``awards``: the intent ones count."""
    out = dict(intent)
    for award in awards:
        topic = intent_topic(award.rule_id)
        if topic is not None:
            out[topic] = out.get(topic, 0) + award.points
    return out


@dataclass(frozen=True)
class IntentTopic:
    id: str
    label: str
    keywords: tuple[str, ...]
    weight: int
    daily_cap: int = 2


DEFAULT_TAXONOMY: tuple[IntentTopic, ...] = (
    # Worth what a pricing visit was as a keyword rule, once a day: a return is renewed interest.
    IntentTopic(
        "pricing",
        "Pricing and buying",
        ("pricing", "price", "quote", "plans", "價格"),
        10,
        daily_cap=1,
    ),
    IntentTopic("integration", "Integrations", ("integration", "api", "webhook", "sdk", "整合"), 5),
    IntentTopic(
        "security",
        "Security and compliance",
        ("security", "sso", "gdpr", "soc 2", "soc2", "iso 27001", "資安"),
        6,
    ),
    IntentTopic(
        "migration",
        "Switching from a competitor",
        ("migrate", "migration", "alternative", "vs", "switch"),
        7,
    ),
)


def _text_of(event: Envelope) -> str:
    """Everything an event says about what the person looked for, lower-cased."""
    parts: list[str] = []
    props = event.payload.get("properties") or {}
    raw_page = event.context.get("page")
    page: dict[str, Any] = raw_page if isinstance(raw_page, dict) else {}
    if event.type in ("page", "screen"):
        parts += [
            str(event.payload.get("name") or ""),
            str(props.get("title") or ""),
            str(page.get("title") or ""),
            page_path(event).replace("-", " ").replace("/", " "),
        ]
        query = props.get("search") or page.get("search") or ""
        if isinstance(query, str):
            parts += [
                " ".join(v)
                for k, v in parse_qs(query.lstrip("?")).items()
                if k in ("q", "query", "s", "search")
            ]
        url = props.get("url") or page.get("url")
        if isinstance(url, str):
            with contextlib.suppress(ValueError):
                parts += [
                    " ".join(v)
                    for k, v in parse_qs(urlsplit(url).query).items()
                    if k in ("q", "query", "s", "search")
                ]
    elif event.type == "track" and event.payload.get("event") in SEARCH_EVENTS:
        parts.append(str(props.get("query") or props.get("search") or ""))
    return " ".join(parts).lower()


@functools.lru_cache(maxsize=256)
def _pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a topic's keywords: latin keywords match whole words only, CJK ones
    anywhere (CJK has no word boundaries)."""
    alternatives = []
    for keyword in (k.lower() for k in keywords):
        if keyword.isascii():
            alternatives.append(rf"(?<![a-z0-9]){re.escape(keyword)}(?![a-z0-9])")
        else:
            alternatives.append(re.escape(keyword))
    return re.compile("|".join(alternatives) or r"(?!)")


def topics_of(
    event: Envelope, taxonomy: Sequence[IntentTopic] = DEFAULT_TAXONOMY
) -> list[IntentTopic]:
    text = _text_of(event)
    if not text.strip():
        return []
    return [t for t in taxonomy if _pattern(t.keywords).search(text)]


def intent_rules(taxonomy: Sequence[IntentTopic] = DEFAULT_TAXONOMY) -> dict[str, Rule]:
    """Each topic as a capped rule, so awards go through the same evaluation and
    explanation as behaviour rules (matching is done by :func:`topics_of`)."""
    return {
        intent_rule_id(t.id): Rule(
            intent_rule_id(t.id),
            f"Researched {t.label.lower()}",
            t.weight,
            "intent",
            cap=t.daily_cap,
            cap_period_days=1,
        )
        for t in taxonomy
    }
