from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from shared.events import (
    InvalidEvent,
    decode,
    derived_id,
    encode,
    latest_version,
    new_event,
    to_dict,
)
from shared.topics import REGISTRY, TRAFFIC


def test_round_trip_keeps_every_field() -> None:
    event = new_event(
        "track",
        {"event": "Signed Up", "properties": {"plan": "pro"}},
        source="web",
        anonymous_id="a1",
        user_id="u1",
        context={"consent": {"categoryPreferences": {"marketing": False}}},
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    back = decode(encode(event))
    assert back == event
    assert back.context["consent"]["categoryPreferences"]["marketing"] is False


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, "empty"),
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "schema_violation"),
    ],
)
def test_undecodable_values_are_invalid_with_a_kind(raw: bytes | None, kind: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw)
    assert info.value.kind == kind


def test_missing_envelope_field_is_named() -> None:
    data = to_dict(new_event("identify", {"traits": {}}, source="web", user_id="u"))
    del data["occurred_at"]
    with pytest.raises(InvalidEvent, match="occurred_at"):
        decode(json.dumps(data).encode())


def test_payload_violation_is_named() -> None:
    data = to_dict(new_event("track", {"event": "X"}, source="web", user_id="u"))
    data["payload"] = {"properties": {}}
    with pytest.raises(InvalidEvent, match="event"):
        decode(json.dumps(data).encode())


def test_unknown_type_and_version_are_invalid() -> None:
    data = to_dict(new_event("track", {"event": "X"}, source="web", user_id="u"))
    with pytest.raises(InvalidEvent) as info:
        decode(json.dumps({**data, "schema_version": 99}).encode())
    assert info.value.kind == "unknown_type"


def test_type_not_registered_on_the_topic_is_invalid() -> None:
    event = new_event(
        "campaign.dispatch",
        {"campaign_id": 1, "run_id": 1, "contact_id": "c", "channel": "email", "message": {}},
        source="x",
    )
    with pytest.raises(InvalidEvent, match="not registered"):
        decode(encode(event), allowed_types=REGISTRY[TRAFFIC].event_types)


def test_readers_tolerate_fields_added_by_newer_producers() -> None:
    data = to_dict(new_event("track", {"event": "X"}, source="web", user_id="u"))
    data["payload"]["added_later"] = 1
    assert decode(json.dumps(data).encode()).payload == {"event": "X", "properties": {}}


def test_encoding_an_invalid_payload_is_a_programming_error() -> None:
    with pytest.raises(ValidationError):
        encode(new_event("group", {"traits": {}}, source="web", user_id="u"))


def test_partition_key_prefers_the_anonymous_id() -> None:
    assert new_event("identify", {}, source="w", anonymous_id="a", user_id="u").partition_key == "a"
    assert new_event("identify", {}, source="w", user_id="u").partition_key == "u"


def _envelope_variants() -> list[dict]:
    """A canonical envelope, and each field replaced by values of every awkward kind."""
    from shared.events import _ENVELOPE_KEYS

    base = to_dict(new_event("page", {"properties": {"path": "/"}}, source="web", user_id="u"))
    odd = [None, 0, 1, -1, True, False, "", "x", "x" * 129, "x" * 201, [], {}, {"a": 1}, 1.5]
    times = [
        "2026-11-29T10:00:00+00:00",
        "2026-11-29T10:00:00.123456+05:30",
        "2026-11-29T10:00:00Z",
        "2026-11-29T10:00:00",
        "2026-11-29 10:00:00+00:00",
        "2026-11-29",
        "2026-13-29T10:00:00+00:00",
        "2026-11-29T10:00:00.1+00:00",
        "not a time",
    ]
    variants = [base, {**base, "extra": 1}]
    for key in sorted(_ENVELOPE_KEYS):
        variants.append({k: v for k, v in base.items() if k != key})
        variants += [{**base, key: value} for value in odd]
    for key in ("occurred_at", "received_at"):
        variants += [{**base, key: value} for value in times]
    return variants


def test_the_fast_envelope_path_agrees_with_the_schema() -> None:
    from shared.events import _ENVELOPE, _fast_envelope

    fast_hits = 0
    for data in _envelope_variants():
        fast = _fast_envelope(data)
        try:
            slow = _ENVELOPE.load(data)
        except ValidationError:
            assert fast is None, data  # only the schema may accept or explain
            continue
        if fast is not None:
            fast_hits += 1
            assert fast == slow, data
    assert fast_hits > 20  # the common shapes really take the fast path


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_derived_id_is_uuid5_over_the_url_namespace(name: str) -> None:
    """Ids already published were uuid5s: the fast path must keep every one the same."""
    assert derived_id(name) == uuid.uuid5(uuid.NAMESPACE_URL, name).hex


def test_latest_version_names_the_newest_and_refuses_unknown_types() -> None:
    assert latest_version("page") == 1
    assert new_event("page", {}, source="t").schema_version == 1
    with pytest.raises(KeyError, match="unknown event type"):
        latest_version("no.such")


_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["", "x" * 199, "x" * 200, "x" * 201, "x" * 255, "x" * 256, "x" * 257]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=3),
)


def _payloads(schema: Schema) -> st.SearchStrategy[dict]:
    """Payloads of the schema's own keys and strangers, with values of every kind."""
    names = [*sorted(schema.fields), "extra", "Event", "traits"]
    return st.dictionaries(st.sampled_from(names), _ODD_VALUES, max_size=5)


def _plain_schemas() -> list[tuple[str, int]]:
    """Every registered payload schema the fast path takes on."""
    from shared.events import PAYLOAD_SCHEMAS, _payload_schema, _plain_fields

    return [key for key in PAYLOAD_SCHEMAS if _plain_fields(_payload_schema(*key)) is not None]


def test_the_fast_payload_path_takes_on_the_traffic_schemas() -> None:
    plain = {event_type for event_type, _ in _plain_schemas()}
    assert {"track", "page", "screen", "identify", "group", "alias"} <= plain
    assert "lead.scored" not in plain  # nested: always marshmallow


@pytest.mark.parametrize("key", _plain_schemas())
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_fast_payload_path_agrees_with_the_schema(key: tuple[str, int], data) -> None:
    """Every payload the fast path loads, the schema loads the same; every payload the
    schema refuses, the fast path leaves to it (so the schema explains)."""
    from shared.events import _fast_payload, _payload_schema

    schema = _payload_schema(*key)
    payload = data.draw(_payloads(schema))
    fast = _fast_payload(schema, payload)
    try:
        slow = schema.load(payload, unknown="exclude")
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        assert fast == slow


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("page", {"properties": {"path": "/pricing"}}),
        ("page", {"name": "Pricing", "category": None, "properties": {}}),
        ("track", {"event": "Signed Up", "properties": {"plan": "pro"}}),
        ("identify", {"traits": {"email": "a@example.com"}}),
        ("group", {"group_id": "acme", "traits": {}}),
        ("alias", {"previous_id": "anon-1"}),
    ],
)
def test_the_common_payloads_take_the_fast_path(event_type: str, payload: dict) -> None:
    from shared.events import _fast_payload, _payload_schema

    schema = _payload_schema(event_type, 1)
    assert _fast_payload(schema, payload) == schema.load(payload, unknown="exclude")


def test_payloads_of_nested_schemas_are_left_to_marshmallow() -> None:
    from shared.events import _fast_payload, _payload_schema

    assert _fast_payload(_payload_schema("lead.scored", 1), {"delta": 1}) is None


@pytest.mark.parametrize(
    "field_",
    [
        fields.String(post_load=[str.strip]),
        fields.String(pre_load=[str.strip]),
        fields.String(data_key="X"),
        fields.String(validate=validate.OneOf(["a"])),
        fields.Dict(validate=validate.Length(max=1)),
        fields.Dict(keys=fields.String()),
        fields.Integer(),
    ],
)
def test_fields_that_are_not_plain_leave_the_schema_to_marshmallow(field_) -> None:
    """What the fast path cannot do as marshmallow does makes it step aside."""
    from shared.events import _fast_payload

    schema = Schema.from_dict({"x": field_})()
    assert _fast_payload(schema, {"x": " a "}) is None


def test_dump_only_fields_are_not_loaded_by_the_fast_path_either() -> None:
    from shared.events import _fast_payload

    schema = Schema.from_dict({"x": fields.String(dump_only=True)})()
    assert _fast_payload(schema, {"x": "a"}) == schema.load({"x": "a"}, unknown="exclude") == {}
