"""Intake is the gate: every limit of shared/limits.py, enforced on the HTTP API with the
field named (or, for free text, cleaned and kept). Each case here once reached a 5xx at
intake or stopped a consumer downstream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.segment import source_tag
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.events import decode
from shared.limits import FUTURE_TOLERANCE, MAX_DEPTH
from tests.unit.traffic_intake.conftest import WRITE_KEY, basic, outbox_rows


def _post(client: FlaskClient, path: str, body: str | dict[str, Any]) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", headers=basic())


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return value


REJECTED = [
    # (what, body, the field the error names)
    (
        "year 1",
        {"anonymousId": "a", "event": "E", "timestamp": "0001-01-01T00:00:00Z"},
        "timestamp",
    ),
    ("year 9999", {"anonymousId": "a", "event": "E", "sentAt": "9999-12-31T23:59:59Z"}, "sentAt"),
    ("NUL in an id", {"anonymousId": "a\x00b", "event": "E"}, "anonymousId"),
    ("lone surrogate in an id", {"userId": "u\ud800", "event": "E"}, "userId"),
    ("newline in an id", {"userId": "u\n1", "event": "E"}, "userId"),
    ("long id", {"userId": "u" * 201, "event": "E"}, "userId"),
    ("long event name", {"userId": "u", "event": "E" * 201}, "event"),
    ("NUL in an event name", {"userId": "u", "event": "E\x00"}, "event"),
    ("long messageId", {"userId": "u", "event": "E", "messageId": "m" * 101}, "messageId"),
    (
        "integer beyond 64 bits",
        {"userId": "u", "event": "E", "properties": {"n": 2**64}},
        "properties.n",
    ),
    (
        "nesting",
        {"userId": "u", "event": "E", "properties": {"deep": _nested(MAX_DEPTH + 5)}},
        "properties.deep" + ".n" * (MAX_DEPTH - 1),
    ),
    (
        "huge revenue",
        {"userId": "u", "event": "Order Completed", "properties": {"revenue": 1e13}},
        "properties.revenue",
    ),
    (
        "word revenue",
        {"userId": "u", "event": "Order Completed", "properties": {"total": "lots"}},
        "properties.total",
    ),
]


@pytest.mark.parametrize(("what", "body", "field"), REJECTED, ids=[r[0] for r in REJECTED])
def test_values_past_a_limit_are_422_naming_the_field(
    client: FlaskClient, intake_app: Flask, what: str, body: dict, field: str
) -> None:
    response = _post(client, "/v1/track", body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["fields"], response.json
    assert outbox_rows(intake_app) == []


def test_a_too_long_email_is_422(client: FlaskClient) -> None:
    body = {"userId": "u", "traits": {"email": "a" * 320 + "@x.co"}}
    response = _post(client, "/v1/identify", body)
    assert response.status_code == 422 and "traits.email" in response.json["error"]["fields"]


@pytest.mark.parametrize(
    "body",
    [
        '{"userId": "u", "event": "E", "properties": {"x": NaN}}',
        '{"userId": "u", "event": "E", "properties": {"x": -Infinity}}',
        '{"userId": "u", "event": "E", "properties": {"x": 1e400}}',
        '{"userId": "u", "event": "E", "properties": {"x": ' + "7" * 5000 + "}}",
        '{"userId": "u", "event": "E", "properties": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
    ids=["NaN", "-Infinity", "1e400", "5000 digits", "5000 levels"],
)
def test_bodies_that_are_not_storable_json_are_400(client: FlaskClient, body: str) -> None:
    response = _post(client, "/v1/track", body)
    assert response.status_code == 400
    assert response.json["error"]["fields"]["_body"][0].startswith("not valid JSON")


def test_without_a_write_key_deep_json_is_still_a_4xx(client: FlaskClient) -> None:
    body = '{"properties": ' + "[" * 5000 + "]" * 5000 + "}"
    response = client.post("/v1/track", data=body, content_type="application/json")
    assert response.status_code in (400, 401)


def test_free_text_is_cleaned_and_kept(client: FlaskClient, intake_app: Flask) -> None:
    body = {
        "anonymousId": "a",
        "name": "Ünïcödé \U0001f600 " + "x" * 300,
        "properties": {"k\ud800": "v\x00", "title": "\udfff"},
        "context": {"page": {"title": "t\x00"}},
    }
    assert _post(client, "/v1/page", body).status_code == 200
    [row] = outbox_rows(intake_app)
    event = decode(row.value)
    assert len(event.payload["name"]) == 200 and event.payload["name"].endswith("…")
    assert event.payload["properties"] == {"k\ufffd": "v\ufffd", "title": "\ufffd"}
    assert event.context["page"] == {"title": "t\ufffd"}


def test_a_wild_sent_at_does_not_break_the_skew_correction(
    client: FlaskClient, intake_app: Flask
) -> None:
    body = {
        "anonymousId": "a",
        "event": "E",
        "originalTimestamp": "1970-01-02T00:00:00Z",
        "sentAt": "8999-01-01T00:00:00Z",
    }
    assert _post(client, "/v1/track", body).status_code == 200
    [row] = outbox_rows(intake_app)
    assert decode(row.value).occurred_at.year == 1970  # the client's value, uncorrected


def test_a_future_timestamp_is_kept_but_not_trusted(client: FlaskClient, intake_app: Flask) -> None:
    body = {"anonymousId": "a", "event": "E", "timestamp": "2400-01-01T00:00:00Z"}
    assert _post(client, "/v1/track", body).status_code == 200
    event = decode(outbox_rows(intake_app)[0].value)
    assert event.occurred_at.year == 2400
    assert event.effective_at <= event.received_at + FUTURE_TOLERANCE


def test_the_batch_context_counts_toward_each_events_size(
    client: FlaskClient, intake_app: Flask
) -> None:
    # 500 KB of context merged into 100 events would have written ~50 MB.
    batch = {
        "context": {"blob": "x" * 40_000},
        "batch": [{"type": "track", "anonymousId": "a", "event": f"E{i}"} for i in range(100)],
    }
    response = _post(client, "/v1/batch", batch)
    assert response.status_code == 422
    assert outbox_rows(intake_app) == []
    small = {**batch, "context": {"locale": "zh-TW"}}
    assert _post(client, "/v1/batch", small).json["accepted"] == 100


def test_an_event_just_within_the_limit_with_its_context_is_accepted(
    client: FlaskClient,
) -> None:
    item = {"type": "track", "anonymousId": "a", "event": "E", "properties": {"p": ""}}
    context = {"c": "x" * 1000}
    size = len(json.dumps(item, separators=(",", ":"))) + len(
        json.dumps(context, separators=(",", ":"))
    )
    item["properties"]["p"] = "y" * (32 * 1024 - size)
    assert _post(client, "/v1/batch", {"context": context, "batch": [item]}).json["accepted"] == 1
    item["properties"]["p"] += "y"
    assert _post(client, "/v1/batch", {"context": context, "batch": [item]}).status_code == 422


def test_junk_message_ids_do_not_deduplicate(client: FlaskClient, intake_app: Flask) -> None:
    for _ in range(3):
        body = {"anonymousId": "a", "event": "E", "messageId": "undefined"}
        assert _post(client, "/v1/track", body).json["accepted"] == 1
    assert len(outbox_rows(intake_app)) == 3


def test_deduplication_is_per_source(intake_config: IntakeConfig) -> None:
    """A messageId is the client's choice: another source sending the same one must not
    suppress this source's event."""
    app = create_app(intake_config)
    init_db(app.extensions[INTAKE_STATE].engine)
    client = app.test_client()
    admin_token = "t-admin"
    app.config["FUNNEL_TOKENS"] = {"admin": admin_token}
    created = client.post(
        "/admin/sources", json={"name": "shop"}, headers={"Authorization": f"Bearer {admin_token}"}
    )
    other_key = created.json["write_key"]
    body = {"anonymousId": "a", "event": "E", "messageId": "m-1"}
    assert client.post("/v1/track", json=body, headers=basic(WRITE_KEY)).json["accepted"] == 1
    assert client.post("/v1/track", json=body, headers=basic(other_key)).json["accepted"] == 1
    assert client.post("/v1/track", json=body, headers=basic(other_key)).json["duplicates"] == 1
    ids = sorted(decode(r.value).event_id for r in outbox_rows(app))
    assert ids == sorted([f"{source_tag('web')}:m-1", f"{source_tag('shop')}:m-1"])
