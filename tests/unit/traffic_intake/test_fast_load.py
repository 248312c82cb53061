"""The validation fast path answers exactly as the call schemas do, or leaves the call to
them: Hypothesis builds calls the way the real SDKs shape them, then spoils them the way
hostile or broken clients do."""

from __future__ import annotations

import math
from typing import Any

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.traffic_intake.fast_load import fast_call
from services.traffic_intake.schemas import CALL_SCHEMAS
from shared.identity import JUNK_IDS
from shared.limits import MAX_EMAIL_LENGTH, MAX_ID_LENGTH, MAX_PAGE_NAME_LENGTH

_SCHEMAS = {name: schema() for name, schema in CALL_SCHEMAS.items()}


def _schema_load(call_type: str, item: Any) -> dict[str, Any] | None:
    """The reference: marshmallow's own load, bypassing the fast path."""
    try:
        return ma.Schema.load(_SCHEMAS[call_type], item)  # type: ignore[no-any-return]
    except ma.ValidationError:
        return None


def _same(a: Any, b: Any) -> bool:
    """Equality that also holds for NaN, which a float property may be (the schema rejects
    it; this only keeps the comparison honest)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --------------------------------------------------------------------------- values

_TEXT = st.text(max_size=12)
_HOSTILE_TEXT = st.one_of(
    _TEXT,
    st.sampled_from(["", " ", "a\x00b", "u\n1", "x\ud800", " padded ", "é", "\x7f"]),
    st.text(min_size=MAX_ID_LENGTH - 1, max_size=MAX_ID_LENGTH + 2, alphabet="ab"),
)
_IDS = st.one_of(
    st.uuids().map(str),
    st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([*sorted(JUNK_IDS), "NULL", " undefined ", "[object Object]"]),
    _HOSTILE_TEXT,
    st.sampled_from([True, 1.5, [], {}]),
)
_TIMES = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: refused
    st.sampled_from(
        [
            "2026-12-04T20:23:33.123Z",
            "2026-12-04T20:23:33+00:00",
            "2026-12-04",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "",
        ]
    ),
    st.integers(),
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats()
    | _HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_OBJECTS = st.one_of(st.dictionaries(_HOSTILE_TEXT, _JSON, max_size=4), _JSON)
_MONEY = st.one_of(
    st.floats(),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.sampled_from(["19.99", " 5 ", "1e3", "lots", "999999999999.99", "1000000000000", True]),
)


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, null, or the key left out (``...``)."""
    return st.one_of(values, st.none(), st.just(...))


def _call(call_type: str) -> st.SearchStrategy[dict[str, Any]]:
    own: dict[str, st.SearchStrategy[Any]] = {
        "track": st.fixed_dictionaries(
            {
                "event": _maybe(
                    st.one_of(st.sampled_from(["Order Completed", "Signed Up"]), _HOSTILE_TEXT)
                ),
                "properties": _maybe(
                    st.one_of(
                        st.fixed_dictionaries(
                            {"revenue": _maybe(_MONEY), "total": _maybe(_MONEY), "sku": _TEXT}
                        ),
                        _OBJECTS,
                    )
                ),
            }
        ),
        "page": st.fixed_dictionaries(
            {
                "name": _maybe(
                    st.one_of(
                        _HOSTILE_TEXT,
                        st.text(min_size=MAX_PAGE_NAME_LENGTH, max_size=210),
                        st.integers(),
                    )
                ),
                "category": _maybe(_HOSTILE_TEXT),
                "properties": _maybe(_OBJECTS),
            }
        ),
        "identify": st.fixed_dictionaries(
            {
                "traits": _maybe(
                    st.one_of(
                        st.fixed_dictionaries(
                            {
                                "email": st.one_of(
                                    st.emails(),
                                    st.just("a@" + "b" * MAX_EMAIL_LENGTH),
                                    st.integers(),
                                )
                            }
                        ),
                        _OBJECTS,
                    )
                )
            }
        ),
        "group": st.fixed_dictionaries({"groupId": _maybe(_IDS), "traits": _maybe(_OBJECTS)}),
        "alias": st.fixed_dictionaries({"previousId": _maybe(_IDS)}),
    }["page" if call_type == "screen" else call_type]
    common = st.fixed_dictionaries(
        {
            "type": st.just(call_type),
            "userId": _maybe(_IDS),
            "anonymousId": _maybe(_IDS),
            "messageId": _maybe(st.one_of(st.uuids().map(lambda u: f"ajs-next-{u.hex}"), _IDS)),
            "timestamp": _maybe(_TIMES),
            "originalTimestamp": _maybe(_TIMES),
            "sentAt": _maybe(_TIMES),
            "context": _maybe(
                st.one_of(
                    st.fixed_dictionaries(
                        {
                            "library": st.fixed_dictionaries(
                                {"name": st.just("analytics.js"), "version": _TEXT}
                            ),
                            "page": st.fixed_dictionaries({"path": _TEXT, "referrer": _TEXT}),
                        }
                    ),
                    _OBJECTS,
                )
            ),
            "integrations": _maybe(_OBJECTS),
            "writeKey": _maybe(st.one_of(_TEXT, st.integers())),
            "_metadata": _maybe(_OBJECTS),  # SDK extras: ignored
        }
    )
    return st.tuples(common, own).map(
        lambda parts: {k: v for part in parts for k, v in part.items() if v is not ...}
    )


_CALLS = st.sampled_from(sorted(CALL_SCHEMAS)).flatmap(
    lambda call_type: st.tuples(st.just(call_type), _call(call_type))
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CALLS)
def test_the_fast_path_answers_as_the_schema_does(case: tuple[str, dict[str, Any]]) -> None:
    call_type, item = case
    fast = fast_call(call_type, item)
    slow = _schema_load(call_type, item)
    if slow is None:
        assert fast is None, item  # only the schema may refuse, and explain why
    elif fast is not None:
        assert _same(fast, slow), item


def test_a_wrong_kind_of_value_is_left_to_the_schema() -> None:
    for item in (None, [], "track", 7, {"type": "track"}):
        assert fast_call("track", item) is None
    assert fast_call("no-such-type", {"userId": "u", "event": "E"}) is None


# What the SDKs really send (shapes copied from analytics-next 1.x and analytics-python 2.x).
SDK_CALLS = [
    (
        "track",
        {
            "type": "track",
            "event": "Product Viewed",
            "properties": {"sku": "SKU-1", "price": 19.99, "revenue": "19.99"},
            "options": {},
            "context": {
                "page": {"path": "/p/1", "referrer": "https://www.google.com/", "title": "P"},
                "userAgent": "Mozilla/5.0",
                "locale": "en-US",
                "library": {"name": "analytics.js", "version": "npm:next-1.70.0"},
            },
            "messageId": "ajs-next-1733343813123-5b1f0c2d",
            "anonymousId": "2b3e7f58-2f0a-4b0e-9b2f-8d6f0d3f6a11",
            "timestamp": "2026-12-04T20:23:33.123Z",
            "integrations": {},
            "userId": None,
            "sentAt": "2026-12-04T20:23:33.200Z",
            "_metadata": {"bundled": ["Segment.io"], "unbundled": []},
            "writeKey": "wk",
        },
    ),
    (
        "page",
        {
            "type": "page",
            "name": None,
            "properties": {"path": "/pricing", "url": "https://example.com/pricing"},
            "context": {"library": {"name": "analytics.js", "version": "npm:next-1.70.0"}},
            "messageId": "ajs-next-1733343813124-77aa",
            "anonymousId": "2b3e7f58-2f0a-4b0e-9b2f-8d6f0d3f6a11",
            "timestamp": "2026-12-04T20:23:33.124Z",
            "userId": "u-42",
        },
    ),
    (
        "identify",
        {
            "type": "identify",
            "traits": {"email": "ann@example.com", "company": "Acme", "employees": 120},
            "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
            "timestamp": "2026-12-04T20:23:33.123456+00:00",
            "integrations": {},
            "userId": "u-42",
            "anonymousId": None,
            "messageId": "6f1c9a58-0d7e-4c35-8f43-2a0b1f4d8e90",
        },
    ),
    ("group", {"type": "group", "groupId": "acme", "traits": {"plan": "pro"}, "userId": 42}),
    ("alias", {"type": "alias", "previousId": "anon-1", "userId": "u-42"}),
    ("screen", {"type": "screen", "name": "Home", "anonymousId": "dev-1"}),
]


@pytest.mark.parametrize(("call_type", "item"), SDK_CALLS, ids=[c[0] for c in SDK_CALLS])
def test_what_the_sdks_send_takes_the_fast_path(call_type: str, item: dict[str, Any]) -> None:
    fast = fast_call(call_type, item)
    assert fast is not None
    assert _same(fast, _schema_load(call_type, item))


def test_the_schemas_use_the_fast_path_and_still_explain_refusals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``load`` on a call schema is the fast path when it can answer, the fields when not:
    a refused call names its field as before. A schema built with other options (here
    ``partial``) never takes the fast path."""
    from services.traffic_intake import schemas

    answered: list[bool] = []

    def counted(call_type: str, item: Any) -> dict[str, Any] | None:
        loaded = fast_call(call_type, item)
        answered.append(loaded is not None)
        return loaded

    monkeypatch.setattr(schemas, "fast_call", counted)
    schema = _SCHEMAS["track"]
    item = dict(SDK_CALLS[0][1])
    assert _same(schema.load(item), fast_call("track", item))
    assert answered == [True]
    assert schemas.TrackCall(partial=True).load({"userId": "u"}) == {"userId": "u"}
    assert answered == [True]
    with pytest.raises(ma.ValidationError) as refused:
        schema.load({**item, "timestamp": "0001-01-01T00:00:00Z"})
    assert "timestamp" in refused.value.messages
