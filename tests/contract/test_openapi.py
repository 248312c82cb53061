"""schemathesis against the three OpenAPI documents: for every operation, generated
requests (valid ones and invalid ones, boundaries first) with the credentials that
operation needs get no server error and an answer that matches the document — its
status code is documented and its body fits the documented schema.

Bounded: ``MAX_EXAMPLES`` generated cases per operation plus schemathesis' boundary
("coverage") cases, derandomized so a run is repeatable; each service's run has a time
limit. Runs on SQLite (the PostgreSQL-specific limits are covered by the generated
traffic test in ``tests/integration/test_hostile_traffic.py``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

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
from shared.config import Tokens

MAX_EXAMPLES = 30
TOKENS = Tokens("sales-t", "marketing-t", "admin-t")
WRITE_KEY = "wk-fuzz"
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def credentials(path: str) -> dict[str, str]:
    """What the operation at ``path`` needs: a write key for tracking, else the role."""
    if path.startswith("/v1/"):
        return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    if path.startswith("/admin"):
        return {"Authorization": f"Bearer {TOKENS.admin}"}
    if path.startswith(("/campaigns", "/members")):
        return {"Authorization": f"Bearer {TOKENS.marketing}"}
    return {"Authorization": f"Bearer {TOKENS.sales}"}


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
        }
    )


def _schema(app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=_config())


@pytest.fixture
def intake_schema(tmp_path: Path) -> Any:
    app = intake_app(
        IntakeConfig(
            database_url=f"sqlite:///{tmp_path / 'intake.db'}",
            write_keys=(WRITE_KEY,),
            tokens=TOKENS,
            rate_limit_per_second=0,
        )
    )
    intake_db(app.extensions[INTAKE_STATE].engine)
    return _schema(app)


@pytest.fixture
def scoring_schema(tmp_path: Path) -> Any:
    app = scoring_app(ScoringConfig(database_url=f"sqlite:///{tmp_path / 's.db'}", tokens=TOKENS))
    scoring_db(app.extensions[SCORING_STATE].engine)
    return _schema(app)


@pytest.fixture
def retargeting_schema(tmp_path: Path) -> Any:
    app = retargeting_app(
        RetargetingConfig(database_url=f"sqlite:///{tmp_path / 'r.db'}", tokens=TOKENS)
    )
    retargeting_db(app.extensions[RETARGETING_STATE].engine)
    return _schema(app)


intake = schemathesis.pytest.from_fixture("intake_schema")
scoring = schemathesis.pytest.from_fixture("scoring_schema")
retargeting = schemathesis.pytest.from_fixture("retargeting_schema")


def _call(case: Any) -> None:
    case.call_and_validate(headers=credentials(case.path), checks=CHECKS)


@pytest.mark.timeout(600)
@intake.parametrize()
def test_intake_api_holds_to_its_document(case: Any) -> None:
    _call(case)


@pytest.mark.timeout(600)
@scoring.parametrize()
def test_scoring_api_holds_to_its_document(case: Any) -> None:
    _call(case)


@pytest.mark.timeout(600)
@retargeting.parametrize()
def test_retargeting_api_holds_to_its_document(case: Any) -> None:
    _call(case)
