"""Rule-set documents: the built-in model survives its document form."""

from __future__ import annotations

from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.rulesets.documents import model_from_document
from services.lead_scoring.web.schemas import RuleSetIn
from shared.events import new_event
from tests.unit.lead_scoring.conftest import default_rules


def test_the_default_rule_set_survives_its_document_form() -> None:
    document = RuleSetIn().load(default_rules())
    document.pop("note")
    again = model_from_document(document, ScoringModel())
    sample = [
        new_event("page", {"properties": {"path": "/pricing"}}, source="w", user_id="u"),
        new_event(
            "track",
            {"event": "Trial Started", "properties": {"plan": "business"}},
            source="w",
            user_id="u",
        ),
    ]
    for event in sample:
        assert again.awards(event, {}) == ScoringModel().awards(event, {})
    assert again.grades == ScoringModel().grades
    assert again.mql_threshold == 50
