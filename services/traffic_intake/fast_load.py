"""The validation fast path: what the call schemas of :mod:`.schemas` return, for calls that
pass every check, without marshmallow's per-field machinery.

Intake validates every event it takes, and marshmallow's field-by-field load was the
largest single cost of a batch (about 0.1 ms an event, 43% of a 100-event batch's
handling). :func:`fast_call` does the same checks with the same helpers
(:mod:`shared.limits`, :func:`shared.identity.is_junk_id`, ``datetime.fromisoformat`` as
marshmallow's ``DateTime`` uses) in straight-line code, and answers only when the call is
valid. Anything else — a wrong type, a junk id, a bad time, an unknown call type — gets
``None``, and the schema then loads it or explains what is wrong, so error messages have
one source.

Contract: for any JSON value ``item``, ``fast_call(call_type, item)`` is either ``None``
or equal to ``CALL_SCHEMAS[call_type]().load(item)`` (which then does not raise).
``tests/unit/traffic_intake/test_fast_load.py`` holds it to that with Hypothesis over
SDK-shaped and hostile calls. A field added to a schema must be added here too: the
test's round of generated calls fails until it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from shared.identity import is_junk_id
from shared.limits import (
    MAX_EMAIL_LENGTH,
    MAX_EVENT_NAME_LENGTH,
    MAX_ID_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    MAX_PAGE_NAME_LENGTH,
    MONEY_PROPERTIES,
    json_problems,
    money,
    text_problem,
    timestamp_problem,
    truncate,
)


class _Slow(Exception):
    """The call needs the schema: it is invalid, or unusual enough to be explained there."""


_TIMES = ("timestamp", "originalTimestamp", "sentAt")


def _identifier(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Slow
    text = str(value).strip()
    if text_problem(text) or is_junk_id(text) or len(text) > MAX_ID_LENGTH:
        raise _Slow
    return text


def _name(value: Any, max_length: int) -> str:
    if type(value) is not str or not value or len(value) > max_length or text_problem(value):
        raise _Slow
    return value


def _cut_name(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _Slow
    return truncate(value, MAX_PAGE_NAME_LENGTH)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _Slow
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise _Slow from None
    if at.utcoffset() is None or timestamp_problem(at):
        raise _Slow
    return at


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Slow
    cleaned, problems = json_problems(dict(value))
    if problems:
        raise _Slow
    return cleaned


def _common(item: dict[str, Any]) -> dict[str, Any]:
    """The fields every call has (``_Call``), checked and loaded."""
    user_id = _identifier(item.get("userId"))
    anonymous_id = _identifier(item.get("anonymousId"))
    if not user_id and not anonymous_id:
        raise _Slow
    message_id = item.get("messageId")
    write_key = item.get("writeKey")
    if write_key is not None and type(write_key) is not str:
        raise _Slow
    call: dict[str, Any] = {
        "userId": user_id,
        "anonymousId": anonymous_id,
        "messageId": None if message_id is None else _name(message_id, MAX_MESSAGE_ID_LENGTH),
        "context": _object(item.get("context", {})),
        "integrations": _object(item.get("integrations", {})),
        "writeKey": write_key,
    }
    for name in _TIMES:
        call[name] = _time(item.get(name))
    return call


def _track(item: dict[str, Any], call: dict[str, Any]) -> None:
    call["event"] = _name(item.get("event"), MAX_EVENT_NAME_LENGTH)
    properties = call["properties"] = _object(item.get("properties", {}))
    for name in MONEY_PROPERTIES:
        value = properties.get(name)
        if value is not None and money(value) is None:
            raise _Slow


def _page(item: dict[str, Any], call: dict[str, Any]) -> None:
    call["name"] = _cut_name(item.get("name"))
    call["category"] = _cut_name(item.get("category"))
    call["properties"] = _object(item.get("properties", {}))


def _identify(item: dict[str, Any], call: dict[str, Any]) -> None:
    traits = call["traits"] = _object(item.get("traits", {}))
    email = traits.get("email")
    if isinstance(email, str) and len(email) > MAX_EMAIL_LENGTH:
        raise _Slow


def _group(item: dict[str, Any], call: dict[str, Any]) -> None:
    group_id = _identifier(item.get("groupId"))
    if group_id is None:
        raise _Slow
    call["groupId"] = group_id
    call["traits"] = _object(item.get("traits", {}))


def _alias(item: dict[str, Any], call: dict[str, Any]) -> None:
    previous_id = _identifier(item.get("previousId"))
    if previous_id is None:
        raise _Slow
    call["previousId"] = previous_id


_OWN_FIELDS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "track": _track,
    "page": _page,
    "screen": _page,
    "identify": _identify,
    "group": _group,
    "alias": _alias,
}


def fast_call(call_type: str, item: Any) -> dict[str, Any] | None:
    """The loaded call, as the schema of ``call_type`` would return it, or None when the
    schema must decide (see the module's contract). Never raises."""
    own = _OWN_FIELDS.get(call_type)
    if own is None or type(item) is not dict:
        return None
    try:
        call = _common(item)
        own(item, call)
    except _Slow:
        return None
    return call
