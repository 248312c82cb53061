"""Consent per purpose, read from what clients send: one reading for every service. Pure.

Purposes: ``analytics`` (measuring), ``marketing`` (messages: e-mail, SMS, WhatsApp,
webhooks), ``advertising`` (ads audiences). Decisions come from
``context.consent.categoryPreferences`` on any call (Segment's consent format; category
names as common consent managers spell them are mapped below) and from identify traits:
``traits.consent`` in the same shape, or ``unsubscribed: true`` (marketing withdrawn).
Anything not stated is unknown, and unknown is no: a message or an export needs a
``granted`` decision for its purpose.

One event can name several categories of one purpose (``{"marketing": false, "email":
true}``), and state consent both in its context and in its traits. Such an event grants a
purpose only if every category it states for that purpose grants it: any denial wins,
whatever the order of the keys or where they were stated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ANALYTICS, MARKETING, ADVERTISING = "analytics", "marketing", "advertising"
PURPOSES = (ANALYTICS, MARKETING, ADVERTISING)

# Category names consent managers use (lower-cased) → the purpose they grant or deny.
CATEGORIES = {
    "analytics": ANALYTICS,
    "performance": ANALYTICS,
    "statistics": ANALYTICS,
    "measurement": ANALYTICS,
    "marketing": MARKETING,
    "email": MARKETING,
    "communications": MARKETING,
    "advertising": ADVERTISING,
    "targeting": ADVERTISING,
    "ads": ADVERTISING,
}


def decisions(context: Mapping[str, Any], traits: Mapping[str, Any] | None) -> dict[str, bool]:
    """The consent decisions one event states, purpose → granted: granted only when every
    category stated for the purpose (in the context and in the traits) grants it."""
    out: dict[str, bool] = {}
    consent = context.get("consent")
    if isinstance(consent, Mapping):
        _read(consent.get("categoryPreferences"), out)
    if traits:
        _read(traits.get("consent"), out)
        if traits.get("unsubscribed") is True:
            out[MARKETING] = False
    return out


def _read(preferences: Any, out: dict[str, bool]) -> None:
    if not isinstance(preferences, Mapping):
        return
    for name, granted in list(preferences.items())[:50]:
        purpose = CATEGORIES.get(str(name).strip().lower())
        if purpose is not None and isinstance(granted, bool):
            out[purpose] = out.get(purpose, True) and granted
