"""What a lead-scoring app holds while it runs, and the one typed way to reach it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from services.lead_scoring.config import ScoringConfig
from services.lead_scoring.model.scoring import ScoringModel
from services.lead_scoring.rulesets.active import IdentityRulesCache, RuleSetCache
from shared.http import app_state

STATE = "lead_scoring"


@dataclass
class ScoringState:
    config: ScoringConfig
    engine: Engine
    sessions: sessionmaker
    base_model: ScoringModel  # version 0: the built-in rules with this deployment's config
    rule_sets: RuleSetCache  # the newest version
    identity_rules: IdentityRulesCache


def state() -> ScoringState:
    """The current app's state (inside a request or app context)."""
    return app_state(STATE, ScoringState)
