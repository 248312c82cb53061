"""Sources, write keys and failed events through intake's admin API."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.failed import resubmit_all_valid
from services.traffic_intake.segment import source_tag
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.config import Tokens
from shared.deadletter import parse_headers
from shared.events import decode
from tests.unit.traffic_intake.conftest import WRITE_KEY, basic, outbox_rows

ADMIN = {"Authorization": "Bearer admin-t"}
EVENT = {"anonymousId": "a1", "event": "Signed Up"}


@pytest.fixture
def app(intake_config: IntakeConfig) -> Flask:
    config = replace(intake_config, tokens=Tokens("sales-t", "marketing-t", "admin-t"))
    app = create_app(config)
    init_db(app.extensions[INTAKE_STATE].engine)
    return app


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    return app.test_client()


def new_source(client: FlaskClient, name: str = "blog", **extra) -> dict:
    response = client.post("/admin/sources", json={"name": name, **extra}, headers=ADMIN)
    assert response.status_code == 201, response.json
    return response.json


def test_created_source_key_writes_as_that_source_and_is_stored_hashed(
    app: Flask, admin: FlaskClient
) -> None:
    source = new_source(admin)
    key = source["write_key"]
    assert key.startswith("wk_") and source["key_hint"] == key[-4:]
    assert admin.post("/v1/track", json=EVENT, headers=basic(key)).status_code == 200
    assert decode(outbox_rows(app)[0].value).source == "blog"
    listed = admin.get("/admin/sources", headers=ADMIN).json["items"]
    assert [s["name"] for s in listed] == ["blog"] and "write_key" not in listed[0]
    with app.extensions[INTAKE_STATE].engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT write_key_hash FROM sources").scalar()
    assert key not in json.dumps(listed) and stored != key and len(stored) == 64


def test_disabled_source_gets_403_until_enabled(admin: FlaskClient) -> None:
    source = new_source(admin)
    key = source["write_key"]
    assert (
        admin.post(f"/admin/sources/{source['id']}/disable", headers=ADMIN).json["enabled"] is False
    )
    response = admin.post("/v1/track", json=EVENT, headers=basic(key))
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    admin.post(f"/admin/sources/{source['id']}/enable", headers=ADMIN)
    assert admin.post("/v1/track", json=EVENT, headers=basic(key)).status_code == 200


def test_rotating_a_key_retires_the_old_one_at_once(admin: FlaskClient) -> None:
    source = new_source(admin)
    rotated = admin.post(f"/admin/sources/{source['id']}/rotate-key", headers=ADMIN).json
    assert rotated["write_key"] != source["write_key"]
    assert (
        admin.post("/v1/track", json=EVENT, headers=basic(source["write_key"])).status_code == 401
    )
    assert (
        admin.post("/v1/track", json=EVENT, headers=basic(rotated["write_key"])).status_code == 200
    )


def test_admin_api_needs_the_admin_role_and_write_keys_only_write(admin: FlaskClient) -> None:
    assert admin.get("/admin/sources").status_code == 401
    assert admin.get("/admin/sources", headers=basic()).status_code == 401
    assert (
        admin.get("/admin/sources", headers={"Authorization": "Bearer sales-t"}).status_code == 403
    )
    assert (
        admin.get(
            "/admin/failed-events", headers={"Authorization": "Bearer marketing-t"}
        ).status_code
        == 403
    )


def test_source_input_errors(admin: FlaskClient) -> None:
    new_source(admin, "shop")
    duplicate = admin.post("/admin/sources", json={"name": "shop"}, headers=ADMIN)
    assert duplicate.status_code == 409 and "name" in duplicate.json["error"]["fields"]
    bad = admin.post(
        "/admin/sources", json={"name": "", "rate_limit_per_second": -1}, headers=ADMIN
    )
    assert bad.status_code == 422
    assert {"name", "rate_limit_per_second"} <= set(bad.json["error"]["fields"])
    assert admin.post("/admin/sources/99/disable", headers=ADMIN).status_code == 404


def test_rate_limit_is_per_write_key(app: Flask, admin: FlaskClient) -> None:
    noisy = new_source(admin, "noisy", rate_limit_per_second=2)["write_key"]
    codes = [
        admin.post("/v1/track", json=EVENT, headers=basic(noisy)).status_code for _ in range(8)
    ]
    assert codes[:4] == [200] * 4  # burst: two seconds' worth
    limited = admin.post("/v1/track", json=EVENT, headers=basic(noisy))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json["error"]["code"] == "rate_limited"
    assert admin.post("/v1/track", json=EVENT, headers=basic(WRITE_KEY)).status_code == 200


def test_rejected_events_are_kept_listed_and_dead_lettered(app: Flask, admin: FlaskClient) -> None:
    admin.post(
        "/v1/batch",
        headers=basic(),
        json={
            "batch": [
                {"type": "track", **EVENT},
                {"type": "track", "userId": "u", "messageId": "m-9"},
                {"type": "track", **EVENT, "properties": {"x": "y" * 40_000}},
            ]
        },
    )
    admin.post("/v1/identify", headers=basic(), json={"traits": {}})
    page = admin.get("/admin/failed-events", headers=ADMIN).json
    assert page["total"] == 3
    kinds = sorted((f["path"], f["kind"]) for f in page["items"])
    assert kinds == [
        ("/v1/batch", "schema_violation"),
        ("/v1/batch", "size_violation"),
        ("/v1/identify", "schema_violation"),
    ]
    identify = next(f for f in page["items"] if f["path"] == "/v1/identify")
    assert "userId" in identify["fields"] and identify["source"] == "web"
    letters = outbox_rows(app, "funnel.deadletter")
    assert len(letters) == 3
    info = parse_headers([(k, v.encode()) for k, v in letters[0].headers.items()])
    assert info["source"] == "http:/v1/batch" and info["kind"] == "schema_violation"
    only_size = admin.get("/admin/failed-events?kind=size_violation", headers=ADMIN).json
    assert only_size["total"] == 1


def test_resubmitting_a_corrected_event_publishes_it_once(app: Flask, admin: FlaskClient) -> None:
    admin.post(
        "/v1/batch",
        headers=basic(),
        json={"batch": [{"type": "track", "userId": "u", "messageId": "m-9"}]},
    )
    [failed] = admin.get("/admin/failed-events", headers=ADMIN).json["items"]
    still_bad = admin.post(f"/admin/failed-events/{failed['id']}/resubmit", headers=ADMIN, json={})
    assert still_bad.status_code == 422 and "event" in still_bad.json["error"]["fields"]
    corrected = {"type": "track", "userId": "u", "messageId": "m-9", "event": "Fixed"}
    first = admin.post(
        f"/admin/failed-events/{failed['id']}/resubmit", headers=ADMIN, json={"event": corrected}
    )
    again = admin.post(
        f"/admin/failed-events/{failed['id']}/resubmit", headers=ADMIN, json={"event": corrected}
    )
    expected = f"{source_tag('web')}:m-9"
    assert (first.json, again.json["accepted"]) == ({"event_id": expected, "accepted": True}, False)
    assert [decode(r.value).payload["event"] for r in outbox_rows(app)] == ["Fixed"]
    pending = admin.get("/admin/failed-events?pending=true", headers=ADMIN).json
    assert pending["total"] == 0
    assert (
        admin.post("/admin/failed-events/999/resubmit", headers=ADMIN, json={}).status_code == 404
    )


def test_bulk_resubmission_takes_what_validates_now(app: Flask, admin: FlaskClient) -> None:
    big = {"type": "track", **EVENT, "properties": {"x": "y" * 40_000}}
    admin.post(
        "/v1/batch",
        headers=basic(),
        json={"batch": [big, {"type": "track", "userId": "u"}, {"type": "track", **EVENT}]},
    )
    from datetime import UTC, datetime

    engine = app.extensions[INTAKE_STATE].engine
    with engine.begin() as conn:
        same_limit = resubmit_all_valid(
            conn, limit=100, received_at=datetime.now(UTC), max_event_bytes=32 * 1024
        )
    assert same_limit == (0, 2)
    with engine.begin() as conn:  # the limit was raised: the big event is valid now
        raised = resubmit_all_valid(
            conn, limit=100, received_at=datetime.now(UTC), max_event_bytes=100_000
        )
    assert raised == (1, 1)
    assert len(outbox_rows(app)) == 2
