"""Every limit on what Funnel accepts from outside, and what happens past it: written once.

Anyone holding a public write key can send anything well-formed, so every value that ends
up in a column, a message or a computation downstream has a bound here. Intake enforces
them (a rejected event is reported with the field named, and kept as a failed event);
consumers apply the same helpers again where a value lands, so an event that reached a
topic some other way (a replay, an older producer) still cannot stop them.

=============================  =============================  ===========================
value                          limit                          past it
=============================  =============================  ===========================
request body                   500 KB, 2,500 events / batch   413 for the request
one event (with the batch's    32 KB of JSON                  the event is rejected
``context`` merged in)
``messageId``                  100 characters, clean text     rejected
``userId``, ``anonymousId``,   200 characters, clean text,    rejected
``groupId``, ``previousId``    not a junk value ("null" …)
``event`` (track name)         200 characters, clean text     rejected
``name``, ``category``         200 characters                 cut, ending in ``…``
(page, screen)
``traits.email``               320 characters                 rejected
``properties.revenue``,        a number (or numeric string)   rejected
``properties.total``           within ±999,999,999,999.99
any number                     finite (JSON has no NaN or     NaN/Infinity: the body is
                               Infinity); integers within     not JSON (400); others:
                               64 bits                        rejected
any nesting                    32 levels                      rejected
any other string (keys too)    valid Unicode                  NUL and lone surrogates
                                                              become U+FFFD
``timestamp``,                 from 1970-01-01 to before      rejected
``originalTimestamp``,         9000-01-01 (UTC)
``sentAt``
=============================  =============================  ===========================

*Clean text* has no control characters and no lone surrogates: ids are matched exactly, so
they are never altered, only refused. Free text is kept as well as it can be.

Time: past timestamps are legitimate (backfills), future ones are not trusted. The client's
value stays in ``occurred_at``; what scoring, caps and decay use is
:func:`effective_time` — never later than ``received_at`` + :data:`FUTURE_TOLERANCE`.

What grows with one person's traffic is capped where it is kept: a lead keeps at most
:data:`MAX_TRAIT_KEYS` traits within :data:`MAX_TRAITS_BYTES` (the oldest keys give way)
and :data:`MAX_ANONYMOUS_IDS` anonymous ids (the oldest are let go); stored reasons are cut
to their column with :func:`truncate`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

# --------------------------------------------------------------------------- sizes
MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_MESSAGE_ID_LENGTH = 100
MAX_ID_LENGTH = 200
MAX_EVENT_NAME_LENGTH = 200
MAX_PAGE_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 320
MAX_DEPTH = 32
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1
MAX_MONEY = Decimal("999999999999.99")  # Numeric(14, 2)
MONEY_PROPERTIES = ("revenue", "total")
MAX_REASON_LENGTH = 500
MAX_ACTOR_LENGTH = 100

# --------------------------------------------------------------------------- per person
MAX_TRAIT_KEYS = 200
MAX_TRAITS_BYTES = MAX_EVENT_BYTES
MAX_ANONYMOUS_IDS = 100

# --------------------------------------------------------------------------- time
TIMESTAMP_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_CEILING = datetime(9000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(minutes=10)

TRUNCATION_MARKER = "…"
REPLACEMENT = "\ufffd"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


# --------------------------------------------------------------------------- text


def clean_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (what browsers do with
    lone surrogates): storable in every column and encodable as UTF-8."""
    if "\x00" not in text and (text.isascii() or not _LONE_SURROGATE.search(text)):
        return text
    return _LONE_SURROGATE.sub(REPLACEMENT, text.replace("\x00", REPLACEMENT))


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be an identifier (control characters, lone surrogates)."""
    if _CONTROL.search(text):
        return "must not contain control characters or lone surrogates"
    return None


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``…`` when cut; always clean."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


# --------------------------------------------------------------------------- JSON values


def json_problems(value: Any, path: str = "") -> tuple[Any, dict[str, list[str]]]:
    """Check and clean a JSON value from outside: ``(cleaned, problems)``.

    Strings and keys are cleaned (:func:`clean_text`); numbers must be finite and integers
    fit 64 bits; nesting stops at :data:`MAX_DEPTH`. ``problems`` maps a dotted path
    (relative to ``path``) to its reasons; empty when the value is acceptable. The value
    is returned unchanged (the same object) when nothing needed cleaning.
    """
    if _plain(value, 0):
        return value, {}
    problems: dict[str, list[str]] = {}
    cleaned = _walk(value, path, 0, problems)
    return cleaned, problems


def _plain_text(text: str) -> bool:
    return "\x00" not in text and (text.isascii() or not _LONE_SURROGATE.search(text))


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` needs neither cleaning nor a problem report: the common case, told
    without building the dotted path of every node as :func:`_walk` does (intake runs this
    on every event's properties and context). A container's items go to
    :func:`_plain_item`, which tells strings and numbers (most of what events hold) in
    place; no generator is built per container."""
    kind = type(value)
    if kind is str:
        return _plain_text(value)
    if value is None or kind is bool:
        return True
    if kind is int:
        return MIN_INTEGER <= value <= MAX_INTEGER
    if kind is float:
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _plain_text(key) or not _plain_item(item, depth):
                return False
        return True
    if kind is list:
        for item in value:  # noqa: SIM110  (a loop: all() over a generator is slower here)
            if not _plain_item(item, depth):
                return False
        return True
    return False


def _plain_item(item: Any, depth: int) -> bool:
    """:func:`_plain` of an item of a container at ``depth``."""
    kind = type(item)
    if kind is str:
        return "\x00" not in item if item.isascii() else _plain_text(item)
    if kind is int:
        return MIN_INTEGER <= item <= MAX_INTEGER
    if kind is float:
        return math.isfinite(item)
    return _plain(item, depth + 1)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _walk(value: Any, path: str, depth: int, problems: dict[str, list[str]]) -> Any:
    kind = type(value)
    if kind is str:
        return clean_text(value)
    if value is None or kind is bool:
        return value
    if kind is int:
        if not MIN_INTEGER <= value <= MAX_INTEGER:
            problems.setdefault(path or "_value", []).append("integer beyond 64 bits")
        return value
    if kind is float:
        if not math.isfinite(value):
            problems.setdefault(path or "_value", []).append("not a finite number")
        return value
    if kind is dict or kind is list:
        if depth >= MAX_DEPTH:
            problems.setdefault(path or "_value", []).append(
                f"nests deeper than {MAX_DEPTH} levels"
            )
            return value
        if kind is list:
            items = [
                _walk(item, _join(path, i), depth + 1, problems) for i, item in enumerate(value)
            ]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = clean_text(key) if isinstance(key, str) else str(key)
            clean_item = _walk(item, _join(path, clean_key), depth + 1, problems)
            changed = changed or clean_key is not key or clean_item is not item
            out[clean_key] = clean_item
        return out if changed else value
    problems.setdefault(path or "_value", []).append(f"not a JSON value ({kind.__name__})")
    return value


# Built once: ``json.dumps`` with options builds an encoder per call, and intake encodes
# every event twice (its size, its outbox row).
_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)


def compact_json(value: Any) -> str:
    """``value`` as compact JSON, as Funnel writes events (non-JSON values as ``str``):
    exactly ``json.dumps(value, separators=(",", ":"), default=str)``."""
    return _COMPACT.encode(value)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (the size limits are about this)."""
    return len(compact_json(value))


def money(value: Any) -> Decimal | None:
    """An amount as Funnel stores it (2 decimals), or None when ``value`` is not a number
    or is beyond :data:`MAX_MONEY`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        amount = Decimal(str(value).strip())
        if not amount.is_finite() or abs(amount) > MAX_MONEY:
            return None
        return amount.quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None


# --------------------------------------------------------------------------- time


def timestamp_problem(at: datetime) -> str | None:
    if at < TIMESTAMP_FLOOR:
        return f"before {TIMESTAMP_FLOOR.date().isoformat()}"
    if at >= TIMESTAMP_CEILING:
        return f"not before {TIMESTAMP_CEILING.date().isoformat()}"
    return None


def effective_time(occurred_at: datetime, received_at: datetime) -> datetime:
    """When an event happened, as far as Funnel trusts the client: ``occurred_at``, but no
    later than ``received_at`` + :data:`FUTURE_TOLERANCE` and no earlier than
    :data:`TIMESTAMP_FLOOR`. Never raises, whatever the two times are."""
    latest = (
        received_at + FUTURE_TOLERANCE
        if received_at < TIMESTAMP_CEILING
        else TIMESTAMP_CEILING + FUTURE_TOLERANCE
    )
    return max(TIMESTAMP_FLOOR, min(occurred_at, latest))


# --------------------------------------------------------------------------- per person


def capped_traits(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    max_keys: int = MAX_TRAIT_KEYS,
    max_bytes: int = MAX_TRAITS_BYTES,
) -> dict[str, Any]:
    """``old`` updated with ``new``, within ``max_keys`` keys and about ``max_bytes`` of
    JSON: the keys set longest ago give way first (a key set again counts as new)."""
    merged = {k: v for k, v in old.items() if k not in new}
    merged.update(new)
    if len(merged) <= max_keys and json_size(merged) <= max_bytes:
        return merged
    keys = list(merged)
    sizes = {k: json_size({k: merged[k]}) for k in keys}
    total = sum(sizes.values())
    start = 0
    while start < len(keys) - 1 and (len(keys) - start > max_keys or total > max_bytes):
        total -= sizes[keys[start]]
        start += 1
    return {k: merged[k] for k in keys[start:]}
