"""Personal accounts: issued once and stored hashed, rotated, revoked, granted PII; from
the admin API and the CLI; every change in the audit log (never the token)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from services.lead_scoring.app import create_app, init_db
from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.models import accounts, audit_log
from services.lead_scoring.state import STATE
from shared.cli import service_main
from shared.config import Tokens
from shared.db import make_engine

ADMIN = {"Authorization": "Bearer admin-t"}


@pytest.fixture
def app(database_url: str) -> Flask:
    app = create_app(
        ScoringConfig(database_url=database_url, tokens=Tokens("s-t", "m-t", "admin-t"))
    )
    init_db(app.extensions[STATE].engine)
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_account_signs_in_as_itself_until_rotated_or_revoked(app: Flask) -> None:
    client = app.test_client()
    created = client.post(
        "/admin/accounts",
        headers=ADMIN,
        json={"name": "Ann", "email": "Ann@Example.com", "role": "admin"},
    )
    assert created.status_code == 201
    account, token = created.json, created.json["token"]
    assert account["email"] == "ann@example.com" and account["active"] is True
    assert client.get("/admin/reps", headers=bearer(token)).status_code == 200
    listed = client.get("/admin/accounts", headers=ADMIN).json["items"]
    assert "token" not in listed[0] and token not in json.dumps(listed)
    with app.extensions[STATE].engine.connect() as conn:
        stored = conn.execute(select(accounts)).one()
    assert stored.token_hash != token and token not in json.dumps(stored._asdict(), default=str)

    rotated = client.post(f"/admin/accounts/{account['id']}/token", headers=ADMIN).json["token"]
    assert client.get("/admin/reps", headers=bearer(token)).status_code == 401
    assert client.get("/admin/reps", headers=bearer(rotated)).status_code == 200
    assert client.delete(f"/admin/accounts/{account['id']}/token", headers=ADMIN).status_code == 204
    assert client.get("/admin/reps", headers=bearer(rotated)).status_code == 401
    assert client.delete("/admin/accounts/999/token", headers=ADMIN).status_code == 404


def test_a_marketing_account_cannot_administer_and_pii_is_granted_explicitly(
    app: Flask,
) -> None:
    client = app.test_client()
    made = client.post(
        "/admin/accounts",
        headers=ADMIN,
        json={"name": "Mo", "email": "mo@x.co", "role": "marketing"},
    ).json
    assert made["pii"] is False
    assert client.get("/admin/accounts", headers=bearer(made["token"])).status_code == 403
    granted = client.patch(f"/admin/accounts/{made['id']}", headers=ADMIN, json={"pii": True})
    assert granted.status_code == 200 and granted.json["pii"] is True
    again = client.post(
        "/admin/accounts", headers=ADMIN, json={"name": "Mo", "email": "MO@x.co", "role": "admin"}
    )
    assert again.status_code == 409
    bad = client.post(
        "/admin/accounts", headers=ADMIN, json={"name": "", "email": "x", "role": "boss"}
    )
    assert bad.status_code == 422 and {"name", "email", "role"} <= set(bad.json["error"]["fields"])


def test_every_change_is_audited_with_who_and_before_and_never_a_token(app: Flask) -> None:
    client = app.test_client()
    made = client.post(
        "/admin/accounts", headers=ADMIN, json={"name": "Ann", "email": "a@x.co", "role": "admin"}
    ).json
    client.patch(f"/admin/accounts/{made['id']}", headers=ADMIN, json={"pii": True})
    client.post(f"/admin/accounts/{made['id']}/token", headers=bearer(made["token"]))
    client.post("/admin/accounts", headers=ADMIN, json={"name": "x"})  # refused: not audited
    entries = client.get("/admin/audit", headers=ADMIN).json["items"]
    assert [e["action"] for e in entries] == ["account.rotate", "account.pii", "account.create"]
    assert entries[0]["actor"] == "Ann" and entries[0]["actor_role"] == "admin"
    assert entries[1]["actor"] == "admin" and entries[1]["before"]["pii"] is False
    assert entries[1]["after"]["pii"] is True and entries[1]["target"] == f"account:{made['id']}"
    assert made["token"] not in json.dumps(entries) and entries[2]["after"]["token"] == "[secret]"
    only = client.get("/admin/audit?action=account.pii", headers=ADMIN).json["items"]
    assert [e["action"] for e in only] == ["account.pii"]
    assert client.get("/admin/audit", headers=bearer(made["token"])).status_code == 401  # rotated


def test_the_cli_manages_accounts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = ScoringConfig(database_url=url)
    init_db(make_engine(url))
    from shared.accounts import cli

    def run(*argv: str) -> str:
        with pytest.raises(SystemExit) as exit_:
            service_main(
                "x",
                load_config=lambda: config,
                init_db=init_db,
                commands={"accounts": cli(lambda c: make_engine(c.database_url), accounts)},
                argv=["accounts", *argv],
            )
        assert exit_.value.code == 0, capsys.readouterr()
        return capsys.readouterr().out

    out = run("add", "--name", "Ann", "--email", "ann@x.co", "--role", "marketing", "--pii")
    token = re.search(r"token (fpa_\S+)", out)
    assert token is not None
    assert "ann@x.co\tactive\tpii=True" in run("list")
    assert "new token fpa_" in run("rotate", "1")
    assert "revoked" in run("revoke", "1")
    assert "\trevoked\t" in run("list")
    with make_engine(url).connect() as conn:
        actions = list(conn.scalars(select(audit_log.c.action).order_by(audit_log.c.id)))
    assert actions == ["account.create", "account.rotate", "account.revoke"]
