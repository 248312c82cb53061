"""Who may call what: every endpoint of every service, with every kind of credential.

The grid is generated from each service's own OpenAPI document (each operation lists
the roles it lets in, ``x-funnel-roles``, written by the same decorator that checks
them), so a new endpoint cannot be forgotten. Credentials: none, the write key, each
role token, each personal token (admin and marketing accounts, a sales rep), a revoked
one, and malformed headers. Without valid credentials: 401. With a valid credential of
another role: 403. With an allowed one: neither. Not a single 2xx where the role does
not allow it. An operation signed instead (providers' receipts: ``funnelSignature``)
opens to no ``Authorization`` at all: 401 whatever it carries.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from services.lead_scoring.app import create_app as scoring_app
from services.lead_scoring.app import init_db as scoring_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.handoff import rep_tokens
from services.lead_scoring.models import Rep
from services.lead_scoring.models import accounts as scoring_accounts
from services.lead_scoring.state import STATE as SCORING_STATE
from services.member_retargeting.app import create_app as retargeting_app
from services.member_retargeting.app import init_db as retargeting_db
from services.member_retargeting.config import RetargetingConfig
from services.member_retargeting.models import accounts as retargeting_accounts
from services.member_retargeting.state import STATE as RETARGETING_STATE
from services.member_retargeting.web import receipts
from services.traffic_intake.app import create_app as intake_app
from services.traffic_intake.app import init_db as intake_db
from services.traffic_intake.config import IntakeConfig
from services.traffic_intake.models import accounts as intake_accounts
from services.traffic_intake.state import STATE as INTAKE_STATE
from shared import accounts
from shared.config import SecurityConfig, Tokens
from shared.http import ROLES_EXTENSION

TOKENS = Tokens("sales-role-token", "marketing-role-token", "admin-role-token")
WRITE_KEY = "wk-grid"
UNTHROTTLED = SecurityConfig(sign_in_failures=0)  # the grid sends many wrong credentials


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def build(name: str, tmp_path: Path) -> tuple[Flask, Any, Any]:
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    if name == "intake":
        app = intake_app(
            IntakeConfig(
                database_url=url, write_keys=(WRITE_KEY,), tokens=TOKENS, security=UNTHROTTLED
            )
        )
        engine = app.extensions[INTAKE_STATE].engine
        intake_db(engine)
        return app, engine, intake_accounts
    if name == "scoring":
        app = scoring_app(ScoringConfig(database_url=url, tokens=TOKENS, security=UNTHROTTLED))
        engine = app.extensions[SCORING_STATE].engine
        scoring_db(engine)
        return app, engine, scoring_accounts
    config = RetargetingConfig(database_url=url, tokens=TOKENS, security=UNTHROTTLED)
    signed = replace(config.delivery, webhook_url="http://127.0.0.1:9/", webhook_secret="grid-s")
    app = retargeting_app(replace(config, delivery=signed))
    engine = app.extensions[RETARGETING_STATE].engine
    retargeting_db(engine)
    return app, engine, retargeting_accounts


Grid = dict[str, tuple[str | None, str]]


def credentials(
    name: str, app: Flask, engine: Any, table: Any
) -> dict[str, tuple[str | None, str]]:
    """label → (Authorization header, the role it acts with or "none")."""
    with engine.begin() as conn:
        _, admin = accounts.create(
            conn, table, name="Ada", email="ada@x.co", role="admin", pii=True, by="test"
        )
        _, marketer = accounts.create(
            conn, table, name="Mo", email="mo@x.co", role="marketing", pii=False, by="test"
        )
        gone, revoked = accounts.create(
            conn, table, name="Old", email="old@x.co", role="admin", pii=False, by="test"
        )
        accounts.revoke(conn, table, gone["id"])
    grid: Grid = {
        "none": (None, "none"),
        "write key": (_basic(WRITE_KEY), "none"),
        "sales role token": ("Bearer sales-role-token", "sales"),
        "marketing role token": ("Bearer marketing-role-token", "marketing"),
        "admin role token": ("Bearer admin-role-token", "admin"),
        "admin personal token": (f"Bearer {admin}", "admin"),
        "marketing personal token": (f"Bearer {marketer}", "marketing"),
        "revoked personal token": (f"Bearer {revoked}", "none"),
        "unknown token": ("Bearer fpa_not-a-real-token", "none"),
        "empty bearer": ("Bearer ", "none"),
        "two words": ("Bearer a b", "none"),
        "bad basic": ("Basic !!!notbase64", "none"),
        "unknown scheme": ("Token admin-role-token", "none"),
    }
    if name == "scoring":
        with app.extensions[SCORING_STATE].sessions.begin() as session:
            rep = Rep(name="Rita", email="rita@x.co")
            session.add(rep)
            session.flush()
            grid["rep personal token"] = (f"Bearer {rep_tokens.issue(session, rep.id)}", "sales")
    return grid


def operations(app: Flask) -> list[tuple[str, str, list[str] | None, bool]]:
    """(method, path, the roles it lets in, whether it is signed instead) per operation."""
    spec = app.test_client().get("/openapi.json").json
    ops = []
    for path, item in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "999", path)
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                signed = any(receipts.SIGNED in s for s in operation.get("security", []))
                ops.append((method.upper(), concrete, operation.get(ROLES_EXTENSION), signed))
    return ops


@pytest.mark.parametrize("name", ["intake", "scoring", "retargeting"])
def test_every_endpoint_times_every_credential(name: str, tmp_path: Path) -> None:
    app, engine, table = build(name, tmp_path)
    grid = credentials(name, app, engine, table)
    client = app.test_client()
    ops = operations(app)
    assert len(ops) >= 5
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    for method, path, roles, signed in ops:
        for label, (header, role) in grid.items():
            headers = {"Authorization": header} if header is not None else {}
            # wait_seconds=0: an allowed access export answers at once.
            response = client.open(
                path, method=method, headers=headers, json={}, query_string={"wait_seconds": 0}
            )
            status = response.status_code
            # The tracking API (no roles): the write key is the credential.
            allowed = not signed and (label == "write key" if roles is None else role in roles)
            if signed:
                ok = status == 401
            elif allowed:
                ok = status not in (401, 403)
            elif roles is None or role == "none":
                ok = status == 401
            else:
                ok = status == 403
            outcomes["allowed" if allowed else "refused"] += 1
            if not ok:
                wrong.append(f"{method} {path} with {label}: {status}")
    assert wrong == [], "\n".join(wrong[:40])
    assert outcomes["allowed"] > 0 and outcomes["refused"] > outcomes["allowed"]


def test_role_tokens_can_be_turned_off_and_personal_tokens_still_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = scoring_app(ScoringConfig(database_url=url, tokens=Tokens(), security=UNTHROTTLED))
    engine = app.extensions[SCORING_STATE].engine
    scoring_db(engine)
    with engine.begin() as conn:
        _, token = accounts.create(
            conn, scoring_accounts, name="A", email="a@x.co", role="admin", pii=False, by="t"
        )
    client = app.test_client()
    assert (
        client.get("/admin/reps", headers={"Authorization": "Bearer admin-role-token"}).status_code
        == 401
    )
    assert (
        client.get("/admin/reps", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
