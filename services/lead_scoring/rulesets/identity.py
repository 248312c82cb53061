"""Identity rules as a versioned document (see :mod:`..model.identity`), edited at
``/admin/identity/rules``. A new version applies to the events processed after it; it
never splits or merges what was resolved before (a split is an explicit action)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.lead_scoring.model.identity import IdentityRule, IdentityRules
from services.lead_scoring.models import IdentityRuleSet


def document_from_identity_rules(rules: IdentityRules) -> dict[str, Any]:
    return {
        "rules": [
            {**asdict(r), "trusted_sources": list(r.trusted_sources), "blocked": list(r.blocked)}
            for r in rules.rules
        ]
    }


def identity_rules_from_document(document: dict[str, Any], base: IdentityRules) -> IdentityRules:
    """The rules a (validated) document describes; ``base`` is not consulted: a document
    lists every kind it knows."""
    return IdentityRules(
        tuple(
            IdentityRule(
                **{
                    **r,
                    "trusted_sources": tuple(r.get("trusted_sources") or ()),
                    "blocked": tuple(r.get("blocked") or ()),
                }
            )
            for r in document["rules"]
        )
    )


def create_identity_rules(session: Session, document: dict[str, Any], note: str | None) -> int:
    """Store ``document`` (validated) as the next version; returns the version."""
    version = (session.scalar(select(func.max(IdentityRuleSet.version))) or 0) + 1
    session.add(IdentityRuleSet(version=version, document=document, note=note))
    session.flush()
    return version
