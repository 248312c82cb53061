"""Person identifiers every service agrees on: their kinds, and the values that are never
an identity."""

from __future__ import annotations

# The kinds of identifier a person is known by, as events and stores name them.
USER_ID = "user_id"
ANONYMOUS_ID = "anonymous_id"
EMAIL = "email"

# Values SDKs and broken templates send when they have no id. They are never an identity:
# accepting one would merge strangers into one person.
JUNK_IDS = frozenset({"", "null", "undefined", "0", "nan", "[object object]", "none", "-1"})


def is_junk_id(value: object) -> bool:
    return not isinstance(value, str) or value.strip().lower() in JUNK_IDS
