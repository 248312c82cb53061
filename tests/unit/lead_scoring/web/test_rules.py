"""The scoring rules admin API: invalid rule sets are 422 naming the field; admin only."""

from __future__ import annotations

import copy

import pytest
from flask import Flask

from tests.unit.lead_scoring.conftest import ADMIN, SALES, default_rules


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["rules"].append(copy.deepcopy(d["rules"][0])), "rules"),
        (lambda d: d["rules"][0].update(event_type="click"), "rules.0.event_type"),
        (lambda d: d["fit_criteria"][0].update(op="in", value=3), "fit_criteria.0.value"),
        (lambda d: d.update(grades={"A": 10, "B": 20, "C": 5}), "grades.A"),
        (lambda d: d["taxonomy"][0].update(keywords=[]), "taxonomy.0.keywords"),
        (lambda d: d.pop("mql_threshold"), "mql_threshold"),
    ],
)
def test_invalid_rule_sets_are_422_naming_the_field(scoring_app: Flask, change, field) -> None:
    document = default_rules()
    change(document)
    response = scoring_app.test_client().put("/admin/scoring/rules", headers=ADMIN, json=document)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"], response.json


def test_rule_sets_are_admin_only(scoring_app: Flask) -> None:
    client = scoring_app.test_client()
    assert client.get("/admin/scoring/rules", headers=SALES).status_code == 403
    assert (
        client.put("/admin/scoring/rules", headers=SALES, json=default_rules()).status_code == 403
    )
    assert client.get("/admin/scoring/rescores/1", headers=ADMIN).status_code == 404
