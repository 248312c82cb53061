"""The reps admin API."""

from __future__ import annotations

from flask import Flask

from tests.unit.lead_scoring.conftest import (
    ADMIN,
    SALES,
    add_rep,
)


def test_reps_admin(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    created = add_rep(client, "mei", countries=["TW"])
    assert (
        client.post(
            "/admin/reps", headers=ADMIN, json={"name": "x", "email": "mei@corp.example"}
        ).status_code
        == 409
    )
    assert client.post("/admin/reps", headers=ADMIN, json={"name": "", "email": "nope"}).json[
        "error"
    ]["fields"].keys() == {"name", "email"}
    patched = client.patch(f"/admin/reps/{created['id']}", headers=ADMIN, json={"available": False})
    assert patched.json["available"] is False
    assert client.patch("/admin/reps/99", headers=ADMIN, json={}).status_code == 404
    assert client.get("/admin/reps", headers=SALES).status_code == 200
    assert client.post("/admin/reps", headers=SALES, json={}).status_code == 403
