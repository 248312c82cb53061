"""The identifiers an event names, as lead-scoring resolves people by them.

An event names its ``user_id`` and ``anonymous_id``; an identify also the e-mail in its
traits; an alias its ``previous_id`` (as either kind). Junk ids ("null", "undefined",
"0" …) are dropped here too, not only at intake: a replayed or foreign event must never
merge strangers.
"""

from __future__ import annotations

from typing import Any

from shared.events import Envelope
from shared.identity import ANONYMOUS_ID, EMAIL, USER_ID, is_junk_id
from shared.limits import MAX_EMAIL_LENGTH, clean_text

IdentityKey = tuple[str, str]
"""``(kind, value)`` of one identifier."""


def normal_email(value: Any) -> str | None:
    """An e-mail as leads keep it (trimmed, lower-case), or None for anything that cannot
    be one."""
    if isinstance(value, str) and "@" in value and len(value.strip()) <= MAX_EMAIL_LENGTH:
        return clean_text(value.strip().lower())
    return None


def identities_of(event: Envelope) -> list[IdentityKey]:
    """Every usable identifier the event names, most specific first."""
    return [(kind, value) for kind, value in _named(event) if not is_junk_id(value)]


def _named(event: Envelope) -> list[IdentityKey]:
    keys: list[IdentityKey] = []
    if event.user_id:
        keys.append((USER_ID, event.user_id))
    if event.anonymous_id:
        keys.append((ANONYMOUS_ID, event.anonymous_id))
    if event.type == "identify":
        email = normal_email(event.payload.get("traits", {}).get("email"))
        if email:
            keys.append((EMAIL, email))
    if event.type == "alias":
        previous = event.payload["previous_id"]
        keys.extend([(USER_ID, previous), (ANONYMOUS_ID, previous)])
    return keys
