from __future__ import annotations

import gzip
import io
import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.traffic_intake.app import create_app
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.config import SecurityConfig
from shared.events import decode
from tests.unit.traffic_intake.conftest import WRITE_KEY, basic, outbox_rows

CALLS = {
    "track": {"anonymousId": "a1", "event": "Signed Up", "properties": {"plan": "pro"}},
    "page": {"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}},
    "screen": {"anonymousId": "a1", "name": "Plans"},
    "identify": {"anonymousId": "a1", "userId": "u1", "traits": {"email": "a@b.co"}},
    "group": {"userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}},
    "alias": {"userId": "u1", "previousId": "a1"},
}


@pytest.mark.parametrize("call_type", sorted(CALLS))
def test_every_call_type_is_made_durable_as_an_envelope(
    client: FlaskClient, intake_app: Flask, call_type: str
) -> None:
    response = client.post(f"/v1/{call_type}", json=CALLS[call_type], headers=basic())
    assert response.status_code == 200
    assert response.json == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    [row] = outbox_rows(intake_app)
    envelope = decode(row.value)
    assert envelope.type == call_type
    assert row.topic == "funnel.traffic"
    assert row.key == envelope.partition_key
    assert row.sent_at is None


def test_write_key_in_the_body_works_like_basic_auth(client: FlaskClient) -> None:
    body = {**CALLS["track"], "writeKey": WRITE_KEY}
    assert client.post("/v1/track", json=body).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, basic("wrong-key"), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}],
)
def test_missing_or_unknown_write_key_is_401(client: FlaskClient, headers: dict) -> None:
    response = client.post("/v1/track", json=CALLS["track"], headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_repeated_message_id_is_acknowledged_but_stored_once(
    client: FlaskClient, intake_app: Flask
) -> None:
    body = {**CALLS["track"], "messageId": "m-42"}
    first = client.post("/v1/track", json=body, headers=basic())
    second = client.post("/v1/track", json=body, headers=basic())
    assert (first.json["accepted"], second.json["accepted"]) == (1, 0)
    assert second.json["duplicates"] == 1
    assert len(outbox_rows(intake_app)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "X"}, "userId"),
        ({"anonymousId": "a"}, "event"),
        ({"anonymousId": "undefined", "event": "X"}, "anonymousId"),
        ({"anonymousId": "a", "event": "X", "properties": "nope"}, "properties"),
        ({"anonymousId": "a", "event": "X", "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_invalid_calls_get_422_naming_the_field(
    client: FlaskClient, intake_app: Flask, body: dict, field: str
) -> None:
    response = client.post("/v1/track", json=body, headers=basic())
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]
    assert outbox_rows(intake_app) == []


def test_bad_json_is_400(client: FlaskClient) -> None:
    response = client.post(
        "/v1/track", data="{nope", content_type="application/json", headers=basic()
    )
    assert response.status_code == 400
    assert response.json["error"]["message"].startswith("request body is not valid JSON: ")
    assert "line 1 column 2" in response.json["error"]["fields"]["_body"][0]


def test_batch_accepts_valid_events_and_reports_each_rejected_one(
    client: FlaskClient, intake_app: Flask
) -> None:
    batch = [
        {"type": "page", **CALLS["page"]},
        {"type": "track", "userId": "u1"},
        {"type": "launch"},
        {"type": "identify", **CALLS["identify"]},
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic())
    assert response.status_code == 200
    assert response.json["accepted"] == 2
    rejected = {r["index"]: r for r in response.json["rejected"]}
    assert sorted(rejected) == [1, 2]
    assert "event" in rejected[1]["fields"]
    assert "type" in rejected[2]["fields"]
    assert [decode(r.value).type for r in outbox_rows(intake_app)] == ["page", "identify"]


def test_batch_with_no_valid_event_is_422_naming_each(client: FlaskClient) -> None:
    response = client.post("/v1/batch", json={"batch": [{"type": "track"}]}, headers=basic())
    assert response.status_code == 422
    assert "batch.0.event" in response.json["error"]["fields"]


def test_batch_over_the_event_limit_is_413(sqlite_url: str) -> None:
    app = create_app(
        IntakeConfig(database_url=sqlite_url, write_keys=(WRITE_KEY,), max_batch_events=3)
    )
    batch = [{"type": "track", **CALLS["track"]}] * 4
    response = app.test_client().post("/v1/batch", json={"batch": batch}, headers=basic())
    assert response.status_code == 413
    assert "batch" in response.json["error"]["fields"]


def test_oversized_single_event_is_413(client: FlaskClient) -> None:
    body = {**CALLS["track"], "properties": {"blob": "x" * 40_000}}
    response = client.post("/v1/track", json=body, headers=basic())
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"


def test_oversized_event_inside_a_batch_is_rejected_with_size_violation(
    client: FlaskClient,
) -> None:
    big = {"type": "track", **CALLS["track"], "properties": {"blob": "x" * 40_000}}
    ok = {"type": "track", **CALLS["track"]}
    response = client.post("/v1/batch", json={"batch": [ok, big]}, headers=basic())
    assert response.json["rejected"][0]["index"] == 1
    assert response.json["rejected"][0]["kind"] == "size_violation"


def test_body_over_the_batch_limit_is_413_even_when_chunked(client: FlaskClient) -> None:
    body = json.dumps({"batch": [{"type": "track", **CALLS["track"], "p": "x" * 600_000}]})
    # No Content-Length: werkzeug must still stop reading at the limit. gunicorn marks a
    # chunked body as terminated; so does this test.
    response = client.post(
        "/v1/batch",
        input_stream=io.BytesIO(body.encode()),
        content_type="application/json",
        headers={**basic(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413


def test_gzip_bodies_are_inflated(client: FlaskClient, intake_app: Flask) -> None:
    body = gzip.compress(json.dumps({"batch": [{"type": "track", **CALLS["track"]}]}).encode())
    response = client.post(
        "/v1/batch",
        data=body,
        content_type="application/json",
        headers={**basic(), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert len(outbox_rows(intake_app)) == 1


def test_gzip_bomb_is_413_and_corrupt_gzip_is_400(client: FlaskClient) -> None:
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
    response = client.post(
        "/v1/batch",
        data=bomb,
        content_type="application/json",
        headers={**basic(), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    response = client.post(
        "/v1/batch",
        data=b"not gzip",
        content_type="application/json",
        headers={**basic(), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"


def test_unavailable_store_answers_503_with_retry_after(tmp_path) -> None:
    config = IntakeConfig(
        database_url=f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", write_keys=(WRITE_KEY,)
    )
    response = (
        create_app(config).test_client().post("/v1/track", json=CALLS["track"], headers=basic())
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.json["error"]["code"] == "unavailable"


def test_unknown_route_and_method_use_the_error_shape(client: FlaskClient) -> None:
    assert client.get("/v2/track").json["error"]["code"] == "not_found"
    response = client.get("/v1/track", headers=basic())
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"


def test_openapi_and_docs_are_served_without_a_cdn(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert {"/v1/track", "/v1/batch", "/v1/identify"} <= set(spec["paths"])
    docs = client.get("/docs").get_data(as_text=True)
    assert "/_static/swagger-ui/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower()
    assert client.get("/_static/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_dedupe_window_ends_when_sent_rows_are_pruned(
    client: FlaskClient, intake_app: Flask
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from shared.outbox import OutboxRelay

    state = intake_app.extensions[INTAKE_STATE]
    body = {**CALLS["track"], "messageId": "m-window"}
    client.post("/v1/track", json=body, headers=basic())
    relay = OutboxRelay(state.engine, state.outbox, lambda: None)  # type: ignore[arg-type,return-value]
    now = datetime.now(UTC)
    assert relay.prune(now - timedelta(days=7)) == 0  # unsent rows are never pruned
    with state.engine.begin() as conn:
        conn.execute(update(state.outbox).values(sent_at=now, created_at=now - timedelta(days=8)))
    assert client.post("/v1/track", json=body, headers=basic()).json["duplicates"] == 1
    assert relay.prune(now - timedelta(days=7)) == 1
    assert client.post("/v1/track", json=body, headers=basic()).json["accepted"] == 1


def test_client_ip_respects_the_configured_trusted_proxies(sqlite_url: str) -> None:
    from dataclasses import replace

    def ip_seen(proxies: int) -> str:
        config = IntakeConfig(database_url=sqlite_url, write_keys=(WRITE_KEY,))
        app = create_app(replace(config, security=SecurityConfig(trusted_proxies=proxies)))
        from services.traffic_intake.app import init_db

        init_db(app.extensions[INTAKE_STATE].engine)
        app.test_client().post(
            "/v1/track",
            json=CALLS["track"],
            environ_base={"REMOTE_ADDR": "10.0.0.2"},
            headers={**basic(), "X-Forwarded-For": "198.51.100.7, 10.0.0.1"},
        )
        return decode(outbox_rows(app)[-1].value).context["ip"]

    assert ip_seen(0) == "10.0.0.2"  # nobody trusted: a client cannot spoof its address
    assert ip_seen(1) == "10.0.0.1"
    assert ip_seen(2) == "198.51.100.7"
