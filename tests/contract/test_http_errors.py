"""Every endpoint of every service, read from its own OpenAPI spec, answers bad requests
with a 4xx in the one error shape, never a 5xx: no credentials, wrong credentials, and
junk bodies and parameters with the right credentials."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask

from services.lead_scoring.app import create_app as scoring_app
from services.lead_scoring.app import init_db as scoring_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.state import STATE as SCORING_STATE
from services.member_retargeting.app import create_app as retargeting_app
from services.member_retargeting.app import init_db as retargeting_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.state import STATE as RETARGETING_STATE
from services.traffic_intake.app import create_app as intake_app
from services.traffic_intake.app import init_db as intake_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared.config import SecurityConfig, Tokens

TOKENS = Tokens("sales-t", "marketing-t", "admin-t")
RIGHT = {
    "intake": {"Authorization": "Basic " + base64.b64encode(b"wk:").decode()},
    "scoring": {"Authorization": "Bearer sales-t"},
    "retargeting": {"Authorization": "Bearer marketing-t"},
}
WRONG = {
    "intake": {"Authorization": "Bearer sales-t"},
    "scoring": {"Authorization": "Bearer marketing-t"},
    "retargeting": {"Authorization": "Bearer sales-t"},
}
JUNK_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"x"',
    b"{",
    b'{"a": {"b": [1, {"c": null}]}}',
    b"\xff\xfe",
    b'{"batch": "nope", "name": 5, "segment": [], "message": 1}',
]


# Every wrong credential is a failed attempt: unthrottled here, as the walk sends many
# from one address (throttling has its own tests).
UNTHROTTLED = SecurityConfig(sign_in_failures=0)


def build(name: str, tmp_path: Path) -> Flask:
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    if name == "intake":
        app = intake_app(IntakeConfig(database_url=url, write_keys=("wk",), security=UNTHROTTLED))
        intake_db(app.extensions[INTAKE_STATE].engine)
    elif name == "scoring":
        app = scoring_app(ScoringConfig(database_url=url, tokens=TOKENS, security=UNTHROTTLED))
        scoring_db(app.extensions[SCORING_STATE].engine)
    else:
        config = RetargetingConfig(database_url=url, tokens=TOKENS, security=UNTHROTTLED)
        # With a webhook secret, so the signed receipts endpoint checks signatures (401).
        signed = replace(config.delivery, webhook_url="http://127.0.0.1:9/", webhook_secret="s")
        app = retargeting_app(replace(config, delivery=signed))
        retargeting_db(app.extensions[RETARGETING_STATE].engine)
    return app


def operations(app: Flask) -> list[tuple[str, str]]:
    spec = app.test_client().get("/openapi.json").json
    ops = []
    for path, item in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "999", path)
        ops += [(method.upper(), concrete) for method in item if method in {"get", "post"}]
    assert ops, "the spec lists no endpoint"
    return ops


def assert_error_shape(response, *, allowed: range = range(400, 500)) -> None:
    assert response.status_code in allowed, (response.status_code, response.get_data()[:300])
    error = response.json["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert isinstance(error["fields"], dict)


@pytest.mark.parametrize("name", ["intake", "scoring", "retargeting"])
def test_every_endpoint_rejects_bad_requests_with_4xx_json(name: str, tmp_path: Path) -> None:
    app = build(name, tmp_path)
    client = app.test_client()
    for method, path in operations(app):
        assert_error_shape(client.open(path, method=method))
        assert client.open(path, method=method).status_code == 401
        assert client.open(path, method=method, headers=WRONG[name]).status_code in (401, 403)
        for body in JUNK_BODIES:
            response = client.open(
                path, method=method, data=body, content_type="application/json", headers=RIGHT[name]
            )
            if response.status_code < 400:  # a GET may ignore a body; it must still be sane
                assert method == "GET" and response.is_json
                continue
            assert_error_shape(response)
        response = client.open(
            path + "?page=-1&min_score=x&stage=%00", method=method, headers=RIGHT[name]
        )
        if response.status_code >= 400:
            assert_error_shape(response)


def test_no_service_imports_another() -> None:
    root = Path(__file__).parents[2] / "services"
    names = [p.name for p in root.iterdir() if (p / "__init__.py").exists()]
    for name in names:
        for source in (root / name).rglob("*.py"):
            text = source.read_text()
            for other in names:
                if other != name:
                    assert f"services.{other}" not in text, f"{source} imports services.{other}"
