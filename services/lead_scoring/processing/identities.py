"""The identifiers an event names, as lead-scoring resolves people by them.

An event names its ``user_id`` and ``anonymous_id``; an identify also the e-mail in its
traits; any call the external ids in ``context.externalIds`` whose type the identity
rules know (kind ``external:<type>``); an alias its ``previous_id`` — as the kind a lead
already owns it as (a user id first), else as an anonymous id. Junk ids ("null",
"undefined", "0" …) and values the rules block are dropped here too, not only at intake:
a replayed or foreign event must never merge strangers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.lead_scoring.model.identity import EXTERNAL_PREFIX, IdentityRules, Key
from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, EMAIL, USER_ID, is_junk_id
from shared.limits import MAX_EMAIL_LENGTH, clean_text

IdentityKey = Key


def normal_email(value: Any) -> str | None:
    """An e-mail as leads keep it (trimmed, lower-case), or None for anything that cannot
    be one."""
    if isinstance(value, str) and "@" in value and len(value.strip()) <= MAX_EMAIL_LENGTH:
        return clean_text(value.strip().lower())
    return None


def lookup_keys(event: Envelope, rules: IdentityRules) -> list[Key]:
    """Every identifier worth looking up for the event (an alias's previous id as both
    kinds): what a batch reads up front."""
    keys = _asserted(event)
    if event.type == "alias":
        previous = event.payload["previous_id"]
        keys += [(USER_ID, previous), (ANONYMOUS_ID, previous)]
    return [k for k in keys if _usable(k, rules)]


def event_keys(event: Envelope, rules: IdentityRules, owned: Callable[[Key], bool]) -> list[Key]:
    """The identifiers the event claims for its person, strongest first."""
    keys = _asserted(event)
    if event.type == "alias":
        previous = event.payload["previous_id"]
        as_user = (USER_ID, previous)
        keys.append(as_user if owned(as_user) else (ANONYMOUS_ID, previous))
    return rules.ordered(k for k in keys if _usable(k, rules))


def _asserted(event: Envelope) -> list[Key]:
    keys: list[Key] = []
    if event.user_id:
        keys.append((USER_ID, event.user_id))
    if event.anonymous_id:
        keys.append((ANONYMOUS_ID, event.anonymous_id))
    if event.type == "identify":
        email = normal_email(event.payload.get("traits", {}).get("email"))
        if email:
            keys.append((EMAIL, email))
    external = event.context.get("externalIds")
    if isinstance(external, list):
        for item in external[:20]:
            if isinstance(item, dict):
                kind, value = item.get("type"), item.get("id")
                if isinstance(kind, str) and isinstance(value, str | int) and kind.strip():
                    keys.append((f"{EXTERNAL_PREFIX}{kind.strip()[:30]}", str(value).strip()))
    return keys


def _usable(key: Key, rules: IdentityRules) -> bool:
    _, value = key
    # An e-mail is the widest identifier a column holds.
    return not is_junk_id(value) and len(value) <= MAX_EMAIL_LENGTH and rules.usable(key)
