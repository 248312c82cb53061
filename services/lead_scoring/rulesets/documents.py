"""Rule-set documents: the JSON form of a scoring model (behaviour rules, intent taxonomy,
fit criteria and grades, MQL threshold), validated by the HTTP schema, stored as versions.

Version 0 is the built-in default (:meth:`ScoringConfig.base_model`). Storing a new
version (:func:`create_rule_set`) starts a rescore job for every live lead; versions only
ever move forward.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.lead_scoring.model.fit import FLOOR, LOWEST_GRADE, FitCriterion
from services.lead_scoring.model.intent import IntentTopic
from services.lead_scoring.model.rules import Rule
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.models import Lead, RescoreJob, RuleSet


def document_from_model(model: ScoringModel) -> dict[str, Any]:
    def rule(r: Rule) -> dict[str, Any]:
        data = asdict(r)
        data["properties"] = {k: list(v) if isinstance(v, tuple) else v for k, v in r.properties}
        return data

    return {
        "rules": [rule(r) for r in model.rules],
        "taxonomy": [{**asdict(t), "keywords": list(t.keywords)} for t in model.taxonomy],
        "fit_criteria": [
            {**asdict(c), "value": list(c.value) if isinstance(c.value, tuple) else c.value}
            for c in model.fit_criteria
        ],
        "grades": {letter: floor for letter, floor in model.grades if letter != LOWEST_GRADE},
        "mql_threshold": model.mql_threshold,
    }


def model_from_document(document: dict[str, Any], base: ScoringModel) -> ScoringModel:
    rules = tuple(
        Rule(
            **{
                **r,
                "properties": tuple(
                    (k, tuple(v) if isinstance(v, list) else v)
                    for k, v in (r.get("properties") or {}).items()
                ),
            }
        )
        for r in document["rules"]
    )
    taxonomy = tuple(
        IntentTopic(**{**t, "keywords": tuple(t["keywords"])}) for t in document["taxonomy"]
    )
    criteria = tuple(
        FitCriterion(
            **{**c, "value": tuple(c["value"]) if isinstance(c["value"], list) else c["value"]}
        )
        for c in document["fit_criteria"]
    )
    grades = (*sorted(document["grades"].items()), (LOWEST_GRADE, FLOOR))
    return replace(
        base,
        rules=rules,
        taxonomy=taxonomy,
        fit_criteria=criteria,
        grades=grades,
        mql_threshold=document["mql_threshold"],
    )


def create_rule_set(session: Session, document: dict[str, Any], note: str | None) -> RescoreJob:
    """Store ``document`` (already validated) as the next version and start rescoring
    every live lead with it; returns the job. New events use the version at once."""
    version = (session.scalar(select(func.max(RuleSet.version))) or 0) + 1
    session.add(RuleSet(version=version, document=document, note=note))
    total = (
        session.scalar(select(func.count()).select_from(Lead).where(Lead.merged_into.is_(None)))
        or 0
    )
    job = RescoreJob(
        version=version, total=total, done=0, failed=0, status="pending" if total else "done"
    )
    session.add(job)
    session.flush()
    return job
