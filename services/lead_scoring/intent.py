"""Intent: what a lead is researching, from keyword match to intent match. Pure.

Page titles, paths and on-site search terms are matched against a taxonomy of topics,
each with keywords and a weight. A matching event earns the topic's weight as points with
the rule id ``intent:<topic>`` — explained like every other point — at most
``daily_cap`` times a day per topic, so reloading a page is not "intent".
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from services.lead_scoring.scoring import Rule, page_path
from shared.events import Envelope

SEARCH_EVENTS = frozenset({"Products Searched", "Searched", "Site Searched"})


@dataclass(frozen=True)
class Topic:
    id: str
    label: str
    keywords: tuple[str, ...]
    weight: int
    daily_cap: int = 2


DEFAULT_TAXONOMY: tuple[Topic, ...] = (
    # Worth what a pricing visit was as a keyword rule, once a day: a return is renewed interest.
    Topic(
        "pricing",
        "Pricing and buying",
        ("pricing", "price", "quote", "plans", "價格"),
        10,
        daily_cap=1,
    ),
    Topic("integration", "Integrations", ("integration", "api", "webhook", "sdk", "整合"), 5),
    Topic(
        "security",
        "Security and compliance",
        ("security", "sso", "gdpr", "soc 2", "soc2", "iso 27001", "資安"),
        6,
    ),
    Topic(
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


def topics_of(event: Envelope, taxonomy: Sequence[Topic] = DEFAULT_TAXONOMY) -> list[Topic]:
    text = _text_of(event)
    if not text.strip():
        return []
    return [t for t in taxonomy if _pattern(t.keywords).search(text)]


def intent_rules(taxonomy: Sequence[Topic] = DEFAULT_TAXONOMY) -> dict[str, Rule]:
    """Each topic as a capped rule, so awards go through the same evaluation and
    explanation as behaviour rules (matching is done by :func:`topics_of`)."""
    return {
        f"intent:{t.id}": Rule(
            f"intent:{t.id}",
            f"Researched {t.label.lower()}",
            t.weight,
            "intent",
            cap=t.daily_cap,
            cap_period_days=1,
        )
        for t in taxonomy
    }
