"""Browser sources at intake: made through the admin API with their allowed origins; CORS
(preflight and the answer) only for those origins; text/plain and type-less (sendBeacon)
JSON bodies; analytics.js's short paths and settings; the first-party script; and the
source kind stamped into every event, whatever the client says."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.traffic_intake.app import create_app, init_db
from services.traffic_intake.browser import SCRIPT, snippet
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.origins import normal_origin
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.config import Tokens
from shared.events import decode
from tests.unit.traffic_intake.conftest import outbox_rows
from tests.unit.traffic_intake.test_admin import ADMIN, EVENT, new_source

SHOP = "https://shop.example.com"


@pytest.fixture
def app(intake_config: IntakeConfig) -> Flask:
    app = create_app(replace(intake_config, tokens=Tokens("sales-t", "marketing-t", "admin-t")))
    init_db(app.extensions[INTAKE_STATE].engine)
    return app


def browser_source(admin: FlaskClient, origins: list[str] | None = None) -> dict[str, Any]:
    return new_source(
        admin, "shop", kind="browser", allowed_origins=origins or [SHOP, "http://localhost:8080"]
    )


def plain(client: FlaskClient, path: str, body: dict, origin: str | None, **kw: Any) -> Any:
    headers = {"Origin": origin} if origin else {}
    return client.post(
        path, data=json.dumps(body), content_type="text/plain;charset=UTF-8", headers=headers, **kw
    )


def test_origins_are_normalised_and_a_browser_source_needs_one(app: Flask) -> None:
    admin = app.test_client()
    made = browser_source(admin, ["HTTPS://Shop.Example.com:443/", "http://localhost:8080"])
    assert made["kind"] == "browser"
    assert made["allowed_origins"] == ["http://localhost:8080", SHOP]
    refused = admin.post("/admin/sources", json={"name": "b2", "kind": "browser"}, headers=ADMIN)
    assert refused.status_code == 422 and "allowed_origins" in refused.json["error"]["fields"]
    for bad in ("https://shop.example.com/path", "javascript:alert(1)", "null", "ftp://x"):
        answer = admin.post(
            "/admin/sources",
            json={"name": "b3", "kind": "browser", "allowed_origins": [bad]},
            headers=ADMIN,
        )
        assert answer.status_code == 422, bad
    server = admin.post(
        "/admin/sources",
        json={"name": "s1", "kind": "server", "allowed_origins": [SHOP]},
        headers=ADMIN,
    )
    assert server.status_code == 422


def test_a_browser_key_from_an_allowed_origin_is_accepted_and_readable(app: Flask) -> None:
    admin = app.test_client()
    key = browser_source(admin)["write_key"]
    answer = plain(admin, "/v1/track", {**EVENT, "writeKey": key}, SHOP)
    assert answer.status_code == 200 and answer.json["accepted"] == 1
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in answer.headers.get("Vary", "")
    event = decode(outbox_rows(app)[0].value)
    assert event.source == "shop" and event.context["funnel"] == {"source_kind": "browser"}


def test_other_origins_and_server_keys_from_browsers_are_refused(app: Flask) -> None:
    admin = app.test_client()
    key = browser_source(admin)["write_key"]
    server_key = new_source(admin, "backend")["write_key"]
    for origin, write_key in (
        ("https://evil.example.com", key),
        ("https://shop.example.com.evil.com", key),
        ("null", key),
        (SHOP, server_key),
    ):
        answer = plain(admin, "/v1/track", {**EVENT, "writeKey": write_key}, origin)
        assert answer.status_code == 403, origin
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert "Origin" in answer.json["error"]["fields"]
    assert outbox_rows(app) == []
    # Without an Origin (a server, curl) either key writes; browser rules apply downstream.
    assert plain(admin, "/v1/track", {**EVENT, "writeKey": key}, None).status_code == 200


def test_a_client_cannot_claim_to_be_a_server_source(app: Flask) -> None:
    admin = app.test_client()
    key = browser_source(admin)["write_key"]
    forged = {**EVENT, "writeKey": key, "context": {"funnel": {"source_kind": "server"}}}
    assert plain(admin, "/v1/track", forged, SHOP).status_code == 200
    server_key = new_source(admin, "backend")["write_key"]
    from_server = {**EVENT, "messageId": "m2", "writeKey": server_key}
    assert plain(admin, "/v1/track", from_server, None).status_code == 200
    kinds = [decode(r.value).context["funnel"]["source_kind"] for r in outbox_rows(app)]
    assert kinds == ["browser", "server"]


def test_preflight_is_answered_for_browser_origins_only(app: Flask) -> None:
    admin = app.test_client()
    browser_source(admin)
    ok = admin.open(
        "/v1/batch",
        method="OPTIONS",
        headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"},
    )
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in ok.headers["Access-Control-Allow-Headers"]
    for headers in (
        {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
        {"Origin": SHOP, "Access-Control-Request-Method": "DELETE"},
    ):
        refused = admin.open("/v1/batch", method="OPTIONS", headers=headers)
        assert refused.status_code == 403
        assert "Access-Control-Allow-Origin" not in refused.headers


def test_beacon_bodies_without_a_type_and_the_short_paths(app: Flask) -> None:
    admin = app.test_client()
    key = browser_source(admin)["write_key"]
    batch = {
        "writeKey": key,
        "batch": [{"type": "page", "anonymousId": "a9", "messageId": "b1", "properties": {}}],
    }
    beacon = admin.post(
        "/v1/batch", data=json.dumps(batch), headers={"Origin": SHOP}, content_type=None
    )
    assert beacon.status_code == 200 and beacon.json["accepted"] == 1
    for short, body in (
        ("t", {"event": "Clicked"}),
        ("p", {"name": "Home"}),
        ("i", {"traits": {"plan": "pro"}}),
        ("g", {"groupId": "acme"}),
        ("a", {"userId": "u9", "previousId": "a9"}),
        ("s", {"name": "Home"}),
    ):
        call = {"anonymousId": "a9", "messageId": f"m-{short}", "writeKey": key, **body}
        answer = plain(admin, f"/v1/{short}", call, SHOP)
        assert answer.status_code == 200, (short, answer.json)
    types = [decode(r.value).type for r in outbox_rows(app)]
    assert types == ["page", "track", "page", "identify", "group", "alias", "screen"]
    bad = plain(admin, "/v1/t", {"anonymousId": "a9", "writeKey": key}, SHOP)
    assert bad.status_code == 422 and "event" in bad.json["error"]["fields"]


def test_analytics_next_settings_point_at_this_intake_for_browser_keys_only(app: Flask) -> None:
    admin = app.test_client()
    key = browser_source(admin)["write_key"]
    server_key = new_source(admin, "backend")["write_key"]
    answer = admin.get(f"/v1/projects/{key}/settings", headers={"Origin": SHOP})
    assert answer.status_code == 200
    segment = answer.json["integrations"]["Segment.io"]
    assert segment["apiKey"] == key and segment["apiHost"] == "localhost/v1"
    assert answer.json["metrics"]["sampleRate"] == 0
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    other = admin.get(f"/v1/projects/{key}/settings", headers={"Origin": "https://evil.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    for bad in (server_key, "wk_unknown"):
        assert admin.get(f"/v1/projects/{bad}/settings").status_code == 404


def test_the_script_is_served_small_and_the_snippet_names_key_and_host(app: Flask) -> None:
    client = app.test_client()
    script = client.get("/v1/funnel.js")
    assert script.status_code == 200 and script.mimetype == "application/javascript"
    assert script.data == SCRIPT
    assert len(gzip.compress(SCRIPT, 9)) < 5_000  # reported in the README
    assert b"http" not in SCRIPT.split(b"*/", 1)[1].replace(b"https:", b"")  # no third party
    text = snippet('k"1', "https://intake.example.com/")
    assert 'k\\"1' in text and '"https://intake.example.com"' in text
    assert "</script>" in text and text.count("<script>") == 1


def test_normal_origin() -> None:
    assert normal_origin("HTTP://LocalHost:80") == "http://localhost"
    assert normal_origin("https://[::1]:8443") == "https://[::1]:8443"
    assert normal_origin("https://a.b:99999") is None
    assert normal_origin("https://user@a.b") is None


def test_a_sources_table_from_before_source_kinds_gets_its_columns(sqlite_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlite_url)
    with engine.begin() as conn:  # the table as the previous release made it
        conn.execute(
            text(
                "CREATE TABLE sources (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL,"
                " write_key_hash VARCHAR(64) NOT NULL, key_hint VARCHAR(8) NOT NULL,"
                " enabled BOOLEAN NOT NULL, rate_limit_per_second FLOAT, created_at DATETIME"
                " NOT NULL, key_rotated_at DATETIME, disabled_at DATETIME)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sources (name, write_key_hash, key_hint, enabled, created_at)"
                " VALUES ('old', 'h', 'hint', 1, '2026-01-01 00:00:00')"
            )
        )
    init_db(engine)
    init_db(engine)  # idempotent
    with engine.connect() as conn:
        row = conn.execute(text("SELECT kind, allowed_origins FROM sources")).one()
    assert tuple(row) == ("server", None)
